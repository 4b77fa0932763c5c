"""The line simulate and poc print for a run's global_test.json (hello-pt's global model test)."""

from __future__ import annotations

import json

from fl_broker.cli.live import global_test_line


def test_the_line_gives_accuracy_loss_samples_and_the_file(tmp_path):
    path = tmp_path / "global_test.json"
    path.write_text(json.dumps({"accuracy": 0.96378, "loss": 0.14454, "samples": 359.0, "model": "m.pt"}))
    assert global_test_line(path) == (
        f"global model test: accuracy 0.9638, loss 0.1445 on 359 held-out samples ({path})"
    )


def test_no_file_or_another_kind_of_file_prints_nothing(tmp_path):
    path = tmp_path / "global_test.json"
    assert global_test_line(path) is None
    for text in ("not json", "[1, 2]", '{"accuracy": 0.9}', '{"accuracy": "x", "loss": 1, "samples": 2}'):
        path.write_text(text)
        assert global_test_line(path) is None
