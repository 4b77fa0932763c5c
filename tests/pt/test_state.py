"""fl_broker/pt/state.py: a module's state as a dict of numpy arrays and back, and through the codec."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the pt extra is not installed (pip install -e '.[pt]')")

from fl_broker.pt.state import load_arrays, tensor_to_array, to_arrays  # noqa: E402
from fl_broker.wire import codec  # noqa: E402
from fl_broker.wire.envelope import shareable_from_dict, shareable_to_dict  # noqa: E402
from fl_broker.wire.messages import DXO, DataKind, from_shareable  # noqa: E402


def small_net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def test_arrays_carry_a_module_to_another_with_the_same_outputs():
    source, target = small_net(1), small_net(2)
    x = torch.randn(5, 3)
    arrays = to_arrays(source)
    assert sorted(arrays) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in arrays.values())
    assert not torch.allclose(source(x), target(x))
    load_arrays(target, arrays)
    torch.testing.assert_close(source(x), target(x))


def test_arrays_are_copies_that_later_training_does_not_change():
    net = small_net(1)
    arrays = to_arrays(net)
    before = arrays["0.weight"].copy()
    with torch.no_grad():
        net[0].weight += 1
    np.testing.assert_array_equal(arrays["0.weight"], before)


def test_exclude_vars_is_a_regular_expression_on_the_names():
    assert sorted(to_arrays(small_net(1), exclude_vars=r"bias$")) == ["0.weight", "2.weight"]


def test_the_arrays_cross_the_wire_codec_unchanged():
    net = small_net(3)
    shareable = DXO(DataKind.WEIGHTS, to_arrays(net)).to_shareable()
    back = from_shareable(shareable_from_dict(codec.decode(codec.encode(shareable_to_dict(shareable)))))
    for name, array in to_arrays(net).items():
        np.testing.assert_array_equal(back.data[name], array)
        assert back.data[name].dtype == array.dtype


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: {**a, "extra.weight": np.zeros(2, np.float32)}, "no variables ['extra.weight']"),
        (
            lambda a: {**a, "0.weight": np.zeros((3, 4), np.float32)},
            "'0.weight' has shape (3, 4), the model's is (4, 3)",
        ),
        (lambda a: {k: v for k, v in a.items() if k != "2.bias"}, "variables ['2.bias'] are missing"),
        (lambda a: {**a, "0.bias": np.array(["a"] * 4)}, "'0.bias' is not numeric"),
    ],
)
def test_arrays_that_do_not_fit_the_module_are_refused_by_name(change, message):
    net = small_net(1)
    before = to_arrays(net)
    with pytest.raises(ValueError) as raised:
        load_arrays(net, change(to_arrays(net)))
    assert message in str(raised.value)
    for name, array in to_arrays(net).items():  # nothing half-loaded
        np.testing.assert_array_equal(array, before[name])


def test_a_partial_model_loads_only_what_it_names():
    net, other = small_net(1), small_net(2)
    load_arrays(net, {"2.bias": to_arrays(other)["2.bias"]}, partial=True)
    np.testing.assert_array_equal(to_arrays(net)["2.bias"], to_arrays(other)["2.bias"])
    np.testing.assert_array_equal(to_arrays(net)["0.weight"], to_arrays(small_net(1))["0.weight"])


def test_values_are_cast_to_the_module_dtype():
    net = small_net(1)
    arrays = {name: array.astype(np.float64) for name, array in to_arrays(net).items()}
    load_arrays(net, arrays)
    assert net[0].weight.dtype == torch.float32


def test_bfloat16_has_no_numpy_dtype_and_says_so():
    with pytest.raises(ValueError, match="'w' is a bfloat16 tensor"):
        tensor_to_array("w", torch.zeros(2, dtype=torch.bfloat16))
