"""A site's app policy: the content hash (equal to a coreutils pipeline), the custom-code rule, the allow-list,
and how a refused deploy is answered, on the in-process transport."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fl_broker.apps.archive import pack_app
from fl_broker.errors import ConfigError
from tests.support.inprocess import APP, ROOT, InProcessFederation
from workers.app_policy import AppPolicy, AppRefused, app_hash, archive_files, folder_hash, read_allow_list
from workers.worker import ClientWorker, worker_workspace

COREUTILS = (
    "find . -type f ! -path '*/__pycache__/*' -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum"
)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """hello-numpy-sag with custom code (two files), a nested file and a __pycache__ (which is never sent, so
    never hashed)."""
    target = tmp_path / "hello-numpy-sag"
    shutil.copytree(APP, target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "custom" / "__pycache__").mkdir(parents=True)
    (target / "custom" / "np_trainer.py").write_text("from fl_broker.fl.numpy_components import NPTrainer\n")
    (target / "custom" / "constants.py").write_text('MODEL_KEY = "numpy_key"\n')
    (target / "custom" / "__pycache__" / "np_trainer.cpython-311.pyc").write_bytes(b"\0compiled")
    (target / "resources" / "data").mkdir()
    (target / "resources" / "data" / "Ärger b.txt").write_text("non-ASCII name with a space\n", encoding="utf-8")
    return target


def test_hash_is_what_the_documented_coreutils_pipeline_prints(app: Path) -> None:
    shell = subprocess.run(["sh", "-c", COREUTILS], cwd=app, capture_output=True, text=True, check=True)
    command = subprocess.run([sys.executable, "-m", "workers.app_policy", str(app)], cwd=ROOT, capture_output=True,
                             text=True, check=True)  # fmt: skip
    assert shell.stdout.split()[0] == folder_hash(app) == command.stdout.split()[0]
    assert command.stdout.strip() == f"{folder_hash(app)}  hello-numpy-sag"


def test_hash_covers_content_and_names_but_not_zip_metadata(app: Path) -> None:
    files = archive_files(pack_app(app))
    other = io.BytesIO()
    with zipfile.ZipFile(other, "w", zipfile.ZIP_STORED) as archive:
        for path, data in reversed(files):
            archive.writestr(zipfile.ZipInfo(path, date_time=(1999, 1, 1, 0, 0, 0)), data)
        archive.writestr(zipfile.ZipInfo("custom/"), b"")  # a directory entry counts for nothing
    assert app_hash(archive_files(other.getvalue())) == app_hash(files)
    changed = [(p, d + b" " if p.endswith("np_trainer.py") else d) for p, d in files]
    renamed = [(p.replace("np_trainer", "trainer"), d) for p, d in files]
    assert len({app_hash(files), app_hash(changed), app_hash(renamed)}) == 3


def test_allow_list_file_format(tmp_path: Path) -> None:
    listed = tmp_path / "apps.allow"
    digest = "ab" * 32
    listed.write_text(f"# approved by the site's reviewer\n\n{digest.upper()}  hello-numpy-sag 2024-05\n")
    assert read_allow_list(listed) == {digest}
    listed.write_text(f"{digest}\nnot-a-hash hello\n")
    with pytest.raises(ConfigError, match=r"apps.allow:2: expected a SHA-256 app hash .* 'not-a-hash'"):
        read_allow_list(listed)
    with pytest.raises(ConfigError, match="cannot read the app allow-list"):
        read_allow_list(tmp_path / "missing")


def test_allow_list_accepts_only_listed_hashes_and_fails_closed(app: Path, tmp_path: Path) -> None:
    archive, listed = pack_app(app), tmp_path / "apps.allow"
    policy = AppPolicy(allow_list=listed)
    listed.write_text("0" * 64 + "\n")
    with pytest.raises(AppRefused, match=f"its hash {folder_hash(app)} is not in the allow-list {listed}"):
        policy.check("hello-numpy-sag", archive)
    listed.write_text(f"{folder_hash(app)}  hello-numpy-sag\n")  # read at every check: no restart needed
    assert policy.check("hello-numpy-sag", archive) == folder_hash(app)
    listed.write_text("garbage\n")
    with pytest.raises(AppRefused, match="expected a SHA-256 app hash"):
        policy.check("hello-numpy-sag", archive)
    with pytest.raises(AppRefused, match="cannot be read"):
        policy.check("hello-numpy-sag", b"not a zip")


def _builtin_app(tmp_path: Path, executor_path: str, components: list | None = None) -> bytes:
    app = tmp_path / "builtin-app"
    (app / "config").mkdir(parents=True, exist_ok=True)
    config = {"format_version": 2, "executors": [{"tasks": ["train"], "executor": {"path": executor_path}}],
              "components": components or []}  # fmt: skip
    (app / "config" / "config_fed_client.json").write_text(json.dumps(config))
    return pack_app(app)


def test_refusing_custom_code(app: Path, tmp_path: Path) -> None:
    policy = AppPolicy(refuse_custom_code=True)
    with pytest.raises(AppRefused, match=r"runs no custom code, and it has 2 file\(s\) in custom/"):
        policy.check("hello-numpy-sag", pack_app(app))
    alias = "nvflare.app_common.shareablegenerators.full_model_shareable_generator.FullModelShareableGenerator"
    ok = _builtin_app(tmp_path, "fl_broker.fl.executor.Executor", [{"id": "g", "path": alias}])
    assert len(policy.check("builtin-app", ok)) == 64
    # No custom/ folder, but code all the same: an importable module run as an "executor" or a component.
    with pytest.raises(AppRefused, match=r"executors\[0\]\.executor\.path names 'subprocess\.Popen'"):
        policy.check("x", _builtin_app(tmp_path, "subprocess.Popen"))
    with pytest.raises(AppRefused, match=r"components\[0\]\.path names 'os\.system'"):
        policy.check("x", _builtin_app(tmp_path, "fl_broker.fl.executor.Executor", [{"id": "c", "path": "os.system"}]))


def test_a_refused_deploy_is_answered_and_forgets_the_earlier_app_of_the_run(app: Path, tmp_path: Path) -> None:
    listed = tmp_path / "site-2.allow"
    listed.write_text(f"{folder_hash(APP)}  hello-numpy-sag\n")
    fed = InProcessFederation(tmp_path / "ws", ["site-1"])
    try:
        worker = ClientWorker(site="site-2", workspace=worker_workspace(fed.root, "site-2"),
                              transport=fed.connect("site-2"), heartbeat_interval=0.1,
                              app_policy=AppPolicy(allow_list=listed))  # fmt: skip
        worker.start()
        fed.workers["site-2"] = worker
        fed.wait_registered(2)
        fed.call("set_run_number", run=1)
        fed.call("upload_app", app="hello-numpy-sag", archive=pack_app(APP))
        assert all(a["ok"] for a in fed.call("deploy_app", app="hello-numpy-sag", target="client")["clients"].values())
        fed.call("upload_app", app="hello-numpy-sag", archive=pack_app(app))  # changed since it was approved
        answers = fed.call("deploy_app", app="hello-numpy-sag", target="all")["clients"]
        assert answers["site-1"]["ok"] and not answers["site-2"]["ok"]
        assert answers["site-2"]["error"] == (
            f"app 'hello-numpy-sag' refused: its hash {folder_hash(app)} is not in the allow-list {listed}"
        )
        assert not worker.workspace.app_dir(1).exists() and worker.app_name is None
        started = fed.call("start_app", target="all")["clients"]
        assert started["site-1"]["ok"] and "no app is deployed here for run 1" in started["site-2"]["error"]
    finally:
        fed.close()


def test_the_worker_program_stops_at_once_on_a_broken_allow_list(tmp_path: Path) -> None:
    listed = tmp_path / "apps.allow"
    listed.write_text("this is not a hash\n")
    command = [sys.executable, "-m", "fl_broker.cli", "worker", "--site", "site-1", "--workspace", str(tmp_path),
               "--broker", "memory://nowhere", "--app-allow-list", str(listed)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "apps.allow:1: expected a SHA-256 app hash" in done.stderr and "Traceback" not in done.stderr
