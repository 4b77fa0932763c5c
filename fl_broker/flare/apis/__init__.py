"""`nvflare.apis`: the core API of FLARE 2.0 (DXO, Shareable, FLContext, FLComponent, Executor ...)."""
