"""The classes an app config may name without custom code: FLARE 2.0's, by FLARE's path or by class name
(`"name": "ScatterAndGather"`), and fl-broker's own, by path or name. Add a line here to make a new built-in
nameable; FLARE paths resolve to the same path under fl_broker.flare, whatever nvflare is installed.
"""

from __future__ import annotations

import difflib
import importlib.util

FLARE_PREFIX = "nvflare."
LAYER_PREFIX = "fl_broker.flare."

# FLARE 2.0 built-ins whose fl-broker class lives elsewhere than the same path under fl_broker.flare.
FLARE_TARGETS: dict[str, str] = {
    "nvflare.app_common.workflows.cyclic_ctl.CyclicController": "fl_broker.fl.cyclic.CyclicController",
    "nvflare.app_common.pt.pt_file_model_persistor.PTFileModelPersistor": "fl_broker.pt.persistor.PTFileModelPersistor",
    "nvflare.app_common.filters.exclude_vars.ExcludeVars": "fl_broker.privacy.exclude_vars.ExcludeVars",
    "nvflare.app_common.filters.percentile_privacy.PercentilePrivacy": "fl_broker.privacy.percentile.PercentilePrivacy",
    "nvflare.app_common.filters.svt_privacy.SVTPrivacy": "fl_broker.privacy.svt.SVTPrivacy",
}

# FLARE 2.0 built-ins fl-broker runs, by FLARE's config path (with FLARE's argument defaults).
FLARE_COMPONENTS: tuple[str, ...] = (
    "nvflare.app_common.workflows.scatter_and_gather.ScatterAndGather",
    "nvflare.app_common.workflows.cross_site_model_eval.CrossSiteModelEval",
    "nvflare.app_common.workflows.initialize_global_weights.InitializeGlobalWeights",
    "nvflare.app_common.aggregators.intime_accumulate_model_aggregator.InTimeAccumulateWeightedAggregator",
    "nvflare.app_common.shareablegenerators.full_model_shareable_generator.FullModelShareableGenerator",
    *FLARE_TARGETS,
)

# FLARE 2.0 built-ins that need an optional package, and the extra that installs it.
FLARE_NEEDS: dict[str, tuple[str, str]] = {
    "nvflare.app_common.pt.pt_file_model_persistor.PTFileModelPersistor": ("torch", "pt"),
}

# fl-broker's own built-ins (a `name` of one of these finds it when no FLARE built-in has that name).
FL_BROKER_COMPONENTS: tuple[str, ...] = (
    "fl_broker.fl.scatter_gather.ScatterAndGather",
    "fl_broker.fl.cross_site_eval.CrossSiteModelEval",
    "fl_broker.fl.aggregation.InTimeAccumulateWeightedAggregator",
    "fl_broker.fl.model.FullModelShareableGenerator",
    "fl_broker.fl.numpy_components.NPTrainer",
    "fl_broker.fl.numpy_components.NPModelPersistor",
    "fl_broker.fl.numpy_components.NPValidator",
)

# fl-broker 0.1's flat module paths, so configs written for it keep loading.
LEGACY_PATHS: dict[str, str] = {
    "fl_broker.scatter_gather.ScatterAndGather": "fl_broker.fl.scatter_gather.ScatterAndGather",
    "fl_broker.aggregation.InTimeAccumulateWeightedAggregator": (
        "fl_broker.fl.aggregation.InTimeAccumulateWeightedAggregator"
    ),
    "fl_broker.model.FullModelShareableGenerator": "fl_broker.fl.model.FullModelShareableGenerator",
}


def target_of(path: str) -> str:
    """The module path fl-broker imports for a config `path`: FLARE's under fl_broker.flare, legacy ones
    renamed, anything else as it is."""
    if path in FLARE_TARGETS:
        return FLARE_TARGETS[path]
    if path.startswith(FLARE_PREFIX):
        return LAYER_PREFIX + path[len(FLARE_PREFIX) :]
    return LEGACY_PATHS.get(path, path)


def supported_flare() -> list[str]:
    """The FLARE paths usable here (those needing a missing optional package left out)."""
    return [path for path in FLARE_COMPONENTS if missing_extra(path) is None]


def missing_extra(path: str) -> str | None:
    """The pip extra a FLARE built-in needs and that is not installed (None: nothing missing)."""
    needed = FLARE_NEEDS.get(path)
    if needed is None or importlib.util.find_spec(needed[0]) is not None:
        return None
    return needed[1]


def path_of_name(name: str) -> str | None:
    """The path of the built-in class called `name`: FLARE's first (FLARE configs mean FLARE's), then
    fl-broker's; None if no built-in has that name."""
    for path in (*FLARE_COMPONENTS, *FL_BROKER_COMPONENTS):
        if path.rpartition(".")[2] == name:
            return path
    return None


def closest(wanted: str) -> str | None:
    """The supported path (or, for a bare class name, the class name) most like `wanted`."""
    paths = [*supported_flare(), *FL_BROKER_COMPONENTS]
    if "." not in wanted:
        names = [path.rpartition(".")[2] for path in paths]
        return next(iter(difflib.get_close_matches(wanted, names, n=1, cutoff=0.0)), None)
    pool = [path for path in paths if path.startswith(FLARE_PREFIX)] if wanted.startswith(FLARE_PREFIX) else paths
    by_class = {path.rpartition(".")[2]: path for path in pool}
    match = difflib.get_close_matches(wanted.rpartition(".")[2], list(by_class), n=1, cutoff=0.6)
    if match:
        return by_class[match[0]]
    return next(iter(difflib.get_close_matches(wanted, pool, n=1, cutoff=0.0)), None)


def unsupported(wanted: str) -> str:
    """What to tell the user about a FLARE path or built-in name fl-broker does not run."""
    extra = missing_extra(wanted)
    if extra is not None:
        return f"{wanted!r} needs the optional extra {extra!r} (pip install 'fl-broker[{extra}]')"
    what = "FLARE 2.0 name" if wanted.startswith(FLARE_PREFIX) else "built-in name"
    suggestion = closest(wanted)
    hint = f"; the closest supported one is {suggestion!r}" if suggestion else ""
    return f"{wanted!r} is a {what} fl-broker does not support{hint}"


# Every FLARE or legacy path and the fl-broker module path it loads (workers.app_policy counts these as built-in).
FLARE_ALIASES: dict[str, str] = {**{path: target_of(path) for path in FLARE_COMPONENTS}, **LEGACY_PATHS}
