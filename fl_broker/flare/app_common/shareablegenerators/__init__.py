"""`nvflare.app_common.shareablegenerators`: FLARE 2.0's built-in shareable generators."""
