"""App archives: round trip, and refusal of anything that could escape the target folder."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest

from fl_broker.apps.archive import UnsafeArchive, check_app_name, pack_app, unpack_app

APP = Path(__file__).resolve().parents[2] / "apps" / "hello-numpy-sag"


def test_round_trip(tmp_path):
    unpack_app(pack_app(APP), tmp_path / "out")
    for name in ("config/config_fed_server.json", "config/config_fed_client.json", "resources/log.config"):
        assert (tmp_path / "out" / name).read_bytes() == (APP / name).read_bytes()


def zip_with(name: str, *, link: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo(name)
        if link:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd" if link else "x")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data, message",
    [
        (zip_with("../evil.py"), "climbs out"),
        (zip_with("config/../../evil.py"), "climbs out"),
        (zip_with("/etc/evil"), "absolute"),
        (zip_with("C:/evil"), "absolute"),
        (zip_with("custom/link", link=True), "is a link"),
        (b"not a zip", "not a zip"),
    ],
)
def test_unsafe_archives_are_refused_and_nothing_is_written(tmp_path, data, message):
    with pytest.raises(UnsafeArchive, match=message):
        unpack_app(data, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil.py").exists()


@pytest.mark.parametrize("name", ["..", "a/b", "", "-x", "a b"])
def test_bad_app_names(name):
    with pytest.raises(UnsafeArchive):
        check_app_name(name)
