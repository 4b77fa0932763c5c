"""Apps travel over the broker as zip archives; unpacking refuses anything that could escape the target."""

from __future__ import annotations

import io
import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from fl_broker.errors import UnsafeArchive

MAX_APP_BYTES = 256 * 1024 * 1024  # unpacked size limit, against zip bombs
_APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_app_name(name: str) -> str:
    """`name` if it is a safe folder name for an app, else UnsafeArchive."""
    if not _APP_NAME.match(name) or name in (".", ".."):
        raise UnsafeArchive(f"invalid app name {name!r}: use letters, digits, '.', '-' or '_'")
    return name


def pack_app(app_dir: Path) -> bytes:
    """Zip the folder `app_dir` (no links followed, no caches)."""
    if not app_dir.is_dir():
        raise FileNotFoundError(f"app folder not found: {app_dir}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(app_dir.rglob("*")):
            if "__pycache__" in path.parts or path.is_symlink():
                continue
            if path.is_file():
                archive.write(path, path.relative_to(app_dir).as_posix())
    return buffer.getvalue()


def _safe_member(info: zipfile.ZipInfo) -> PurePosixPath:
    name = info.filename
    path = PurePosixPath(name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or path.is_absolute():
        raise UnsafeArchive(f"archive member {name!r} has an absolute path")
    if ".." in path.parts or "\\" in name:
        raise UnsafeArchive(f"archive member {name!r} climbs out of the app folder")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UnsafeArchive(f"archive member {name!r} is a link")
    return path


def unpack_app(data: bytes, dest: Path) -> None:
    """Replace `dest` with the archive's contents, after checking every member."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise UnsafeArchive(f"not a zip archive: {exc}") from exc
    with archive:
        members = archive.infolist()
        for info in members:
            _safe_member(info)
        if sum(info.file_size for info in members) > MAX_APP_BYTES:
            raise UnsafeArchive(f"archive unpacks to more than {MAX_APP_BYTES} bytes")
        staging = dest.with_name(dest.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for info in members:
            target = staging.joinpath(*_safe_member(info).parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink)
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
