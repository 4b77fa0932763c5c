"""`nvflare.app_common.aggregators`: FLARE 2.0's built-in aggregators on fl-broker's aggregation."""
