"""`nvflare.app_common.pt`: FLARE 2.0's PyTorch components (they need the optional `pt` extra: torch)."""
