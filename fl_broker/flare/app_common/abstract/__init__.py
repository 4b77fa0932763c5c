"""`nvflare.app_common.abstract`: the bases FLARE 2.0 app components implement."""
