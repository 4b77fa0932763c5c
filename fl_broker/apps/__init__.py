"""FLARE-shaped app folders: config reading, component building, archives and the workspace layout."""
