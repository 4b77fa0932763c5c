"""How an app's code imports: its custom/ folder as FLARE does it, and `nvflare` as fl-broker's layer.

- custom/: FLARE puts the deployed custom/ folder on sys.path, so one custom file imports another by its plain
  name (`from constants import NPConstants`). Here each loaded app gets a package of its own, `_fl_app_<id>`,
  whose path is its custom/ folder, and while the app loads, plain imports of names found in that folder
  resolve to that package's modules (after whatever sys.path itself provides, as an appended sys.path entry
  would). The plain names are taken out of sys.modules again afterwards, so two apps (or two runs of one app,
  or the server and the sites of `simulate` in one process) each with a constants.py never see each other's.
- nvflare: while any app is loaded or running, `import nvflare...` resolves to fl_broker.flare (the very same
  module objects), unless the real nvflare is installed: then that one is used, and fl-broker says so once.
  FL_BROKER_NVFLARE=fl_broker makes fl-broker's layer win even then (also said once, as a warning).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import threading
import types
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FLARE_NAME = "nvflare"
LAYER = "fl_broker.flare"
CHOICE_VARIABLE = "FL_BROKER_NVFLARE"  # "fl_broker": always fl-broker's layer; unset/"auto": the installed one wins

_lock = threading.RLock()  # one app's imports at a time: plain names are process-wide while they are resolved
_users = 0
_alias_finder: _AliasFinder | None = None
_announced: set[str] = set()


class _AliasLoader(importlib.abc.Loader):
    """Makes the module being imported an existing module under another name (no second copy of its code)."""

    def __init__(self, real_name: str) -> None:
        self.real_name = real_name
        self._real_spec: Any = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = importlib.import_module(self.real_name)
        self._real_spec = module.__spec__
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        # The import system stamped the alias's spec on the module; the module keeps its own.
        module.__spec__ = self._real_spec


def _alias_spec(fullname: str, real_name: str) -> importlib.machinery.ModuleSpec | None:
    try:
        real = importlib.util.find_spec(real_name)
    except ImportError:
        return None
    if real is None:
        return None
    return importlib.machinery.ModuleSpec(
        fullname, _AliasLoader(real_name), is_package=real.submodule_search_locations is not None
    )


class _AliasFinder(importlib.abc.MetaPathFinder):
    """`nvflare` and `nvflare.x.y` -> `fl_broker.flare` and `fl_broker.flare.x.y`."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: Any = None) -> Any:
        if fullname != FLARE_NAME and not fullname.startswith(FLARE_NAME + "."):
            return None
        return _alias_spec(fullname, LAYER + fullname[len(FLARE_NAME) :])


def installed_nvflare() -> str | None:
    """Where a real nvflare package is installed (None if it is not)."""
    spec = importlib.machinery.PathFinder.find_spec(FLARE_NAME)
    if spec is None:
        return None
    return str(spec.origin or (list(spec.submodule_search_locations or []) or ["?"])[0])


def _announce(key: str, level: int, message: str, *args: Any) -> None:
    if key not in _announced:
        _announced.add(key)
        log.log(level, message, *args)


def _install_alias() -> None:
    global _alias_finder
    real = installed_nvflare()
    forced = os.environ.get(CHOICE_VARIABLE, "auto").strip().lower() == "fl_broker"
    if real is not None and not forced:
        _announce(
            "installed",
            logging.WARNING,
            "apps import the installed nvflare (%s), not fl-broker's FLARE layer; set %s=fl_broker to use fl-broker's",
            real,
            CHOICE_VARIABLE,
        )
        return
    if real is not None:
        _announce(
            "shadow",
            logging.WARNING,
            "apps import fl-broker's FLARE layer as nvflare, not the one installed at %s (%s=fl_broker)",
            real,
            CHOICE_VARIABLE,
        )
    else:
        _announce("layer", logging.INFO, "apps import nvflare as fl-broker's FLARE 2.0 layer (%s)", LAYER)
    _alias_finder = _AliasFinder()
    sys.meta_path.insert(0, _alias_finder)


def _uninstall_alias() -> None:
    global _alias_finder
    if _alias_finder is None:
        return
    sys.meta_path[:] = [finder for finder in sys.meta_path if finder is not _alias_finder]
    _alias_finder = None
    for name in [n for n in sys.modules if n == FLARE_NAME or n.startswith(FLARE_NAME + ".")]:
        if getattr(sys.modules[name], "__name__", "").startswith(LAYER):  # only our aliases, never a real one
            del sys.modules[name]


def acquire_nvflare() -> None:
    """An app is loaded or runs: `import nvflare` resolves as the module docstring says until release."""
    global _users
    with _lock:
        if _users == 0:
            _install_alias()
        _users += 1


def release_nvflare() -> None:
    """The app that called acquire_nvflare is done."""
    global _users
    with _lock:
        _users = max(0, _users - 1)
        if _users == 0:
            _uninstall_alias()


def nvflare_is_layer() -> bool:
    """Whether `import nvflare` gives fl-broker's layer right now."""
    return _alias_finder is not None


class _CustomFinder(importlib.abc.MetaPathFinder):
    """Plain imports of names in one app's custom/ folder -> that app's package."""

    def __init__(self, package: CustomPackage) -> None:
        self.package = package
        self.added: list[str] = []  # the plain names bound in sys.modules, taken out afterwards

    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: Any = None) -> Any:
        parent, _, _ = fullname.rpartition(".")
        if parent:
            claimed = parent in self.added  # a submodule of a custom package imported by its plain name
        else:
            # sys.path wins, as it would over an entry appended to it (the regular finders ran before us, but a
            # name they know that failed to import must not fall back to custom/)
            claimed = self.package.has(fullname) and importlib.machinery.PathFinder.find_spec(fullname) is None
        if not claimed:
            return None
        spec = _alias_spec(fullname, f"{self.package.name}.{fullname}")
        if spec is not None:
            self.added.append(fullname)
        return spec


class CustomPackage:
    """One loaded app's custom/ folder, as the package `_fl_app_<id>` (a new one for every load)."""

    def __init__(self, custom_dir: Path | None) -> None:
        self.custom_dir = custom_dir
        self.name = f"_fl_app_{uuid.uuid4().hex[:8]}"
        self._finder: _CustomFinder | None = None  # set while importing() is active
        package = types.ModuleType(self.name, f"the custom/ folder of an app ({custom_dir})")
        spec = importlib.machinery.ModuleSpec(self.name, None, is_package=True)
        spec.submodule_search_locations = [str(custom_dir)] if custom_dir else []
        package.__spec__, package.__path__, package.__package__ = spec, list(spec.submodule_search_locations), self.name
        sys.modules[self.name] = package

    def has(self, module_name: str) -> bool:
        """Whether `module_name` (dotted) is a module or package in custom/."""
        if self.custom_dir is None:
            return False
        base = self.custom_dir.joinpath(*module_name.split("."))
        return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file() or base.is_dir()

    def import_module(self, module_name: str) -> types.ModuleType:
        """The app's module `module_name` (imported once per load, with the app's import rules)."""
        with self.importing():
            return importlib.import_module(f"{self.name}.{module_name}")

    @contextmanager
    def importing(self) -> Iterator[None]:
        """While inside, plain imports of custom/ names resolve to this app's modules."""
        if self._finder is not None:  # already inside (the loader wraps a whole load, imports come within)
            yield
            return
        with _lock:
            finder = self._finder = _CustomFinder(self)
            saved = {name: sys.modules[name] for name in list(sys.modules) if self.has(name.split(".")[0])}
            sys.meta_path.append(finder)
            try:
                yield
            finally:
                self._finder = None
                sys.meta_path[:] = [f for f in sys.meta_path if f is not finder]
                for name in finder.added:
                    sys.modules.pop(name, None)
                sys.modules.update(saved)

    def close(self) -> None:
        """Forget the app's modules (the run is over)."""
        for name in [n for n in sys.modules if n == self.name or n.startswith(self.name + ".")]:
            del sys.modules[name]
