"""Which apps a site agrees to run. Whoever holds the admin login can deploy code to every site (as in FLARE),
so a site may restrict that, as FLARE 2.x sites can:

- refuse custom code: no file under the app's `custom/` folder, and every class the client config names
  (components, executors) is one of fl-broker's built-ins (`fl_broker.*` or a FLARE alias of one), so an
  app cannot run code through an importable module either (e.g. `subprocess.Popen` as an "executor");
- an allow-list: only apps whose content hash is listed in a local file run here.

Each option is a restriction of its own; with both, an app must pass both. A refused deploy is reported to
the server in the deploy reply (kind `AppRefused`), so the admin sees why, and logged on the site.

The content hash covers exactly the files the server sends (those `pack_app` zips: no `__pycache__`, no
links): SHA-256 over the lines `<sha256 of the file>  <path>` sorted by path, i.e. what coreutils prints for

    cd APP && find . -type f ! -path '*/__pycache__/*' -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum \\
        | sha256sum

and what `python -m workers.app_policy APP_DIR` prints. Zip metadata (dates, compression) does not count.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import sys
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fl_broker.apps.archive import MAX_APP_BYTES, pack_app
from fl_broker.apps.config import CLIENT_CONFIG, FLARE_ALIASES, component_specs, field_of, nested_paths, spec_path
from fl_broker.apps.filter_config import filter_class_paths
from fl_broker.errors import ConfigError, FlBrokerError

BUILTIN_PREFIX = "fl_broker."
CUSTOM_DIR = "custom"
_HASH = re.compile(r"^[0-9a-f]{64}$")


class AppRefused(FlBrokerError):
    """This site's policy does not allow the app; the message says which rule and how to allow it."""


def app_hash(files: Iterable[tuple[str, bytes]]) -> str:
    """The content hash of an app given as (posix path, content) pairs (see the module docstring)."""
    # Ordered by the path's bytes, as `LC_ALL=C sort` orders them.
    entries = sorted((path.encode("utf-8"), hashlib.sha256(data).hexdigest().encode("ascii")) for path, data in files)
    return hashlib.sha256(b"".join(digest + b"  " + path + b"\n" for path, digest in entries)).hexdigest()


def archive_files(archive: bytes) -> list[tuple[str, bytes]]:
    """The files of an app archive as (path, content), directories left out. AppRefused if unreadable."""
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
            members = [info for info in zipped.infolist() if not info.is_dir()]
            if sum(info.file_size for info in members) > MAX_APP_BYTES:
                raise AppRefused(f"the app unpacks to more than {MAX_APP_BYTES} bytes")
            return [(info.filename, zipped.read(info)) for info in members]
    except (zipfile.BadZipFile, OSError, ValueError) as exc:  # ValueError: e.g. a broken compressed stream
        raise AppRefused(f"the app archive cannot be read: {exc}") from exc


def folder_hash(app_dir: Path) -> str:
    """The content hash of an app folder, exactly as a site computes it from the archive the server sends."""
    return app_hash(archive_files(pack_app(app_dir)))


def read_allow_list(path: Path) -> set[str]:
    """The hashes in an allow-list file: one per line, optionally followed by a note; '#' starts a comment."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the app allow-list: {exc}") from exc
    hashes = set()
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if not _HASH.match(words[0].lower()):
            raise ConfigError(f"{path}:{number}: expected a SHA-256 app hash (64 hex digits), got {words[0]!r}")
        hashes.add(words[0].lower())
    return hashes


@dataclass(frozen=True)
class AppPolicy:
    """A site's app policy; the default allows every app."""

    refuse_custom_code: bool = False
    allow_list: Path | None = None  # read at every deploy, so edits apply without a restart

    @property
    def restricts(self) -> bool:
        """Whether any rule is on."""
        return self.refuse_custom_code or self.allow_list is not None

    def check(self, app: str, archive: bytes) -> str:
        """The app's content hash if this policy allows the app; AppRefused naming the rule otherwise."""
        files = archive_files(archive)
        digest = app_hash(files)
        if self.allow_list is not None:
            try:
                allowed = read_allow_list(self.allow_list)
            except ConfigError as exc:  # fail closed: a broken list allows nothing
                raise AppRefused(f"app {app!r} (hash {digest}) refused: {exc}") from exc
            if digest not in allowed:
                raise AppRefused(f"app {app!r} refused: its hash {digest} is not in the allow-list {self.allow_list}")
        if self.refuse_custom_code:
            reason = custom_code_in(files)
            if reason:
                raise AppRefused(f"app {app!r} (hash {digest}) refused: this site runs no custom code, and {reason}")
        return digest


def custom_code_in(files: list[tuple[str, bytes]]) -> str | None:
    """Why the app counts as carrying custom code, or None if it uses built-in classes only."""
    custom = [path for path, _ in files if PurePosixPath(path).parts[:1] == (CUSTOM_DIR,)]
    if custom:
        return f"it has {len(custom)} file(s) in {CUSTOM_DIR}/ (e.g. {custom[0]})"
    config = next((data for path, data in files if path == CLIENT_CONFIG), None)
    if config is None:
        return None  # nothing to run: loading it fails with a clear ConfigError at start_app
    for path, where in _class_paths(config):
        target = FLARE_ALIASES.get(path, path)
        if not target.startswith(BUILTIN_PREFIX):
            return f"{where}.path names {path!r}, which is not an fl-broker built-in"
    return None


def _class_paths(config_bytes: bytes) -> list[tuple[str, str]]:
    """(path, where) of every class the client config names, as `load_client_app` resolves them."""
    name = PurePosixPath(CLIENT_CONFIG).name
    try:
        config = json.loads(config_bytes.decode("utf-8"))
        if not isinstance(config, dict):
            raise ConfigError(f"{name}: expected a JSON object at the top level")
        found = []
        for spec in component_specs(config, "components", name):  # a `name` is a built-in's path here
            found += [(spec.path, spec.where), *nested_paths(spec.args, f"{spec.where}.args")]
        for index, entry in enumerate(field_of(config, "executors", list, name, default=[])):
            where = f"{name}: executors[{index}].executor"
            executor = entry.get("executor") if isinstance(entry, dict) else None
            if not isinstance(executor, dict):
                found.append(("", where))
                continue
            args = field_of(executor, "args", dict, where, default={})
            found += [(spec_path(executor, where), where), *nested_paths(args, f"{where}.args")]
        return found + filter_class_paths(config, name)  # filters are classes the app builds too
    except (UnicodeDecodeError, json.JSONDecodeError, ConfigError) as exc:
        raise AppRefused(f"cannot check the classes the app names: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    """`python -m workers.app_policy APP_DIR...`: print each app folder's content hash, as allow-list lines."""
    parser = argparse.ArgumentParser(prog="python -m workers.app_policy", description=main.__doc__)
    parser.add_argument("apps", nargs="+", type=Path, help="app folders, e.g. apps/hello-numpy-sag")
    args = parser.parse_args(argv)
    for app_dir in args.apps:
        try:
            print(f"{folder_hash(app_dir)}  {app_dir.name}")
        except (OSError, AppRefused) as exc:
            print(f"error: {app_dir}: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
