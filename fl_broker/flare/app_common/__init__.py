"""`nvflare.app_common`: FLARE 2.0's application components (abstract bases, constants, built-ins)."""
