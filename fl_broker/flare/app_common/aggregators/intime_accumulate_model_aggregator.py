"""`...aggregators.intime_accumulate_model_aggregator`: FLARE's InTimeAccumulateWeightedAggregator is fl-broker's,
with FLARE's defaults: `expected_data_kind` WEIGHT_DIFF, `exclude_vars` a regular expression."""

from __future__ import annotations

from fl_broker.fl import aggregation
from fl_broker.flare.apis.fl_component import FLComponent


class InTimeAccumulateWeightedAggregator(aggregation.InTimeAccumulateWeightedAggregator, FLComponent):
    """The weighted mean of the round's results, folded in as they arrive (FLARE's arguments and defaults)."""

    def __init__(
        self,
        *,
        exclude_vars: str | None = None,
        aggregation_weights: dict[str, float] | None = None,
        expected_data_kind: str = "WEIGHT_DIFF",
    ) -> None:
        super().__init__(
            exclude_vars=exclude_vars, aggregation_weights=aggregation_weights, expected_data_kind=expected_data_kind
        )
