"""The seed's session, typed into a real terminal (tmux) against a server and two workers running as
processes on RabbitMQ."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.support.processes import ROOT, spawn

pytestmark = pytest.mark.rabbitmq

FINAL = np.array([[11, 12, 13], [14, 15, 16], [17, 18, 19]], dtype=np.float32)


class Terminal:
    """One tmux session on a private server socket: type into it, read its screen."""

    def __init__(self, command: list[str], exit_file: Path) -> None:
        if shutil.which("tmux") is None:
            pytest.skip("tmux is not installed")
        self.socket = f"fl-admin-{uuid.uuid4().hex[:8]}"
        self.session = "admin"
        self.exit_file = exit_file
        # The exit code goes to a file: tmux 3.3 sometimes leaves an exited pane process unreaped (a zombie)
        # for many seconds, so #{pane_dead_status} is not a reliable way to read it.
        script = 'env -u COLUMNS -u LINES "$@"; echo $? > "$EXIT_FILE"'
        size = ("-x", "200", "-y", "60")
        where = ("-c", str(ROOT), "-e", f"EXIT_FILE={exit_file}")
        self._tmux("new-session", "-d", "-s", self.session, *size, *where, "sh", "-c", script, "sh", *command)
        self._tmux("set-option", "-t", self.session, "remain-on-exit", "on")  # keep the screen to read

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10)
        return done.stdout

    def type(self, text: str, *, enter: bool = True) -> None:
        """Type `text` key by key, like a person, then Enter."""
        for char in text:
            self._tmux("send-keys", "-t", self.session, "-l", char)
            time.sleep(0.01)
        if enter:
            self._tmux("send-keys", "-t", self.session, "Enter")

    def key(self, name: str) -> None:
        self._tmux("send-keys", "-t", self.session, name)

    def screen(self) -> str:
        """Everything the pane shows, with its scrollback."""
        return self._tmux("capture-pane", "-p", "-J", "-t", self.session, "-S", "-5000")

    def wait_for(self, *texts: str, after: int = 0, timeout: float = 60) -> str:
        """Wait until one of `texts` shows up beyond the first `after` characters of the screen; the new part."""
        deadline = time.monotonic() + timeout
        while True:
            new = self.screen()[after:]
            if any(text in new for text in texts):
                time.sleep(0.3)  # let the rest of a table arrive
                return self.screen()[after:]
            if time.monotonic() > deadline:
                raise AssertionError(f"{texts!r} did not appear; the screen shows:\n{self.screen()[-4000:]}")
            time.sleep(0.1)

    def command(self, line: str, *expect: str, timeout: float = 60) -> str:
        """Type a command and wait for one of `expect` in its output; returns the output."""
        mark = len(self.screen().rstrip())
        self.type(line)
        return self.wait_for(*expect, after=mark, timeout=timeout)

    def exit_status(self, timeout: float = 15) -> int:
        """The console's exit code, once it has exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            written = self.exit_file.read_text().strip() if self.exit_file.is_file() else ""
            if written.isdigit():
                return int(written)
            time.sleep(0.1)
        raise AssertionError(f"the console did not exit; the screen shows:\n{self.screen()[-3000:]}")

    def close(self) -> None:
        self._tmux("kill-server")


def test_an_admin_session_typed_in_a_terminal(tmp_path: Path, rabbitmq_url: str, processes) -> None:
    processes.append(spawn(tmp_path, "server", broker=rabbitmq_url))
    for site in ("site-1", "site-2"):
        processes.append(spawn(tmp_path, "worker", "--site", site, "--heartbeat-interval", "1", broker=rabbitmq_url))
    admin = [sys.executable, "-m", "fl_broker.cli", "admin", "--workspace", str(tmp_path), "--broker", rabbitmq_url]
    terminal = Terminal([*admin, "--timeout", "30"], tmp_path / "admin-exit-code")  # runs in the clone's root
    try:
        banner = terminal.wait_for("Type help")
        assert "as guest" in banner and "vhost test-" in banner and ":guest@" not in banner

        deadline = time.monotonic() + 60  # the workers register within a few seconds of starting
        while True:
            status = terminal.command("check_status server", "Registered clients", "Error", "no client")
            if "site-1" in status and "site-2" in status:
                break
            assert time.monotonic() < deadline, status
            time.sleep(1)
        ages = re.findall(r"\((\d+\.\d) s ago\)", status)
        assert len(ages) == 2, status  # both with one decimal

        out = terminal.command("upload_app hello-numpy-sag", "Error")  # nothing staged in admin/transfer
        assert "did you mean: upload_app apps/hello-numpy-sag" in out
        mark = len(terminal.screen().rstrip())
        terminal.type("upload_app apps/hello-numpy-sa", enter=False)  # -sa: other apps share hello-numpy-(s)
        terminal.key("Tab")  # completes the folder on the way to the app
        terminal.wait_for("apps/hello-numpy-sag/", after=mark)
        terminal.key("Enter")
        out = terminal.wait_for("uploaded app hello-numpy-sag", "Error", after=mark)
        assert "upload_app apps/hello-numpy-sag/" in out and "Error" not in out
        out = terminal.command("set_run_number 1", "│ site-2")  # the server's line, then the clients' table
        assert "Created a new run folder: run_1" in out and "│ site-1" in out
        mark = len(terminal.screen().rstrip())
        terminal.type("deploy_app hello-n", enter=False)
        terminal.key("Tab")  # completes the staged app name
        terminal.type("all")
        out = terminal.wait_for("│ site-2", after=mark)
        assert "deploy_app hello-numpy-sag all" in out and "deployed hello-numpy-sag to the server" in out
        out = terminal.command("check_status client", "│ site-2")
        header = next(line for line in out.splitlines() if "Site" in line)
        assert "Result" not in header and "Status" in header
        out = terminal.command("start_app all", "started hello-numpy-sag")
        out = terminal.command("watch", "run 1 finished: 10 / 10 rounds", timeout=120)  # live, fed by fl.event
        assert "10/10 rounds" in out and "last aggregation: -" not in out  # the run may end before watch starts

        deadline = time.monotonic() + 120
        while True:
            out = terminal.command("check_status server", "Registered clients")
            if "finished" in out and "stopped" in out:
                break
            assert time.monotonic() < deadline, out
            time.sleep(1)
        assert re.search(r"Rounds done / num_rounds +│? *10 / 10", out) and "hello-numpy-sag" in out, out
        out = terminal.command("ls site-1 run_1", "model/")
        assert "app_site-1/" in out
        out = terminal.command("grep site-2 -n 'round 9: new weights' log.txt", "round 9: new weights")
        assert re.search(r"\d+:.*round 9: new weights \[\[11\.0, 12\.0, 13\.0\]", out), out
        out = terminal.command("cat server ../site-1/log.txt", "Error")
        assert "refused: ../site-1/log.txt leaves the workspace" in out
        out = terminal.command("download_model", "[17. 18. 19.]]", "Error")
        assert "float32 3x3" in out and "admin/download/run_1/models" in out
        out = terminal.command("get_run_number", "run_number")
        assert re.search(r"run_number +│? *1", out), out

        terminal.command("shutdown client", "are you sure? (y/N)")
        out = terminal.command("y", "shutting down")
        assert "site-1" in out and "site-2" in out
        terminal.command("shutdown server", "are you sure? (y/N)")
        terminal.command("y", "server: shutting down")
        processes[0].wait(timeout=30)
        started = time.monotonic()
        out = terminal.command("check_status server", "Error")
        assert "the server is not running" in out and time.monotonic() - started < 5  # not the 30 s timeout
        terminal.type("bye")
        assert terminal.exit_status() == 0
        screen = terminal.screen()
        assert "> bye" in screen and "Traceback" not in screen
    finally:
        (tmp_path / "screen.txt").write_text(terminal.screen())  # what the person saw, for debugging
        terminal.close()
    for proc in processes:
        assert proc.wait(timeout=30) == 0, proc.stderr.read().decode()[-2000:]
    final = np.load(tmp_path / "server" / "run_1" / "models" / "server.npy")
    np.testing.assert_array_equal(final, FINAL)
