"""Privacy filters for FLARE's filter chains (`task_data_filters` / `task_result_filters`): FLARE 2.0's
ExcludeVars, PercentilePrivacy and SVTPrivacy, and fl-broker's GaussianPrivacy (clipping + Gaussian noise).

`FILTER_NAMES` maps the short names a config may give as `"name"` to their classes' paths; FLARE's own
paths (`nvflare.app_common.filters....`) resolve to them through `fl_broker.apps.builtins.FLARE_TARGETS`.
"""

from __future__ import annotations

FILTER_NAMES = {
    "ExcludeVars": "fl_broker.privacy.exclude_vars.ExcludeVars",
    "PercentilePrivacy": "fl_broker.privacy.percentile.PercentilePrivacy",
    "SVTPrivacy": "fl_broker.privacy.svt.SVTPrivacy",
    "GaussianPrivacy": "fl_broker.privacy.gaussian.GaussianPrivacy",
}
