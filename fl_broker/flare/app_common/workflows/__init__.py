"""`nvflare.app_common.workflows`: FLARE 2.0's built-in workflows, run by fl-broker's own implementations."""
