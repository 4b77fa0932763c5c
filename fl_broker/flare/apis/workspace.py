"""`nvflare.apis.workspace`: where a participant's runs and apps live (FLARE 2.0's layout, which fl-broker's
workspace keeps: `<root>/run_N/app_<name>/`)."""

from __future__ import annotations

import os


class Workspace:
    """The folders of one participant (`name` is the site, or "server")."""

    def __init__(self, root_dir: str, name: str, config_folder: str = "config") -> None:
        self.root_dir = root_dir
        self.name = name
        self.config_folder = config_folder

    def get_root_dir(self) -> str:
        """The participant's workspace folder."""
        return self.root_dir

    def get_startup_kit_dir(self) -> str:
        """Where a FLARE startup kit would be (fl-broker has none)."""
        return os.path.join(self.root_dir, "startup")

    def get_run_dir(self, run_num: int) -> str:
        """The folder of run `run_num`."""
        return os.path.join(self.root_dir, f"run_{run_num}")

    def get_app_dir(self, run_num: int) -> str:
        """The app deployed for run `run_num`."""
        return os.path.join(self.get_run_dir(run_num), f"app_{self.name}")

    def get_app_config_dir(self, run_num: int) -> str:
        """That app's config folder."""
        return os.path.join(self.get_app_dir(run_num), self.config_folder)

    def get_app_custom_dir(self, run_num: int) -> str:
        """That app's custom code."""
        return os.path.join(self.get_app_dir(run_num), "custom")
