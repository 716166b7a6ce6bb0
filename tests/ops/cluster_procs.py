"""Processes the heavy ops tests start (`raygate up`, `ray start`, the Keeper), and stopping exactly those."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

__all__ = ["REPO", "Started", "descendants", "kill_tree", "wait_until"]

REPO = Path(__file__).resolve().parents[2]


def wait_until(predicate, timeout_s: float, what: str, period_s: float = 0.2):
    """Poll `predicate` until it returns something truthy; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # not up yet
            last_error = exc
        time.sleep(period_s)
    raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what} (last error: {last_error!r})")


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _ray_temp_dirs(procs: list[psutil.Process]) -> set[str]:
    """Temp dirs of the Ray sessions among `procs` (`raygate up` removes its own only when it exits cleanly)."""
    found = set()
    for proc in procs:
        try:
            found.update(re.findall(r"(/tmp/rg-[A-Za-z0-9_]+)/session_", " ".join(proc.cmdline())))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def kill_tree(pid: int, extra: list[psutil.Process] = ()) -> None:
    """SIGKILL a process we started, its process group and every descendant (Redis runs in its own group),
    then remove the Ray temp dir their session used."""
    tree = descendants(pid) + list(extra)
    temp_dirs = _ray_temp_dirs(tree)
    try:
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for proc in tree:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=10)
    for path in temp_dirs:
        shutil.rmtree(path, ignore_errors=True)


class Started:
    """A command started here in its own session, output to a log file; `stop` ends it and all it started."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.process = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.known: list[psutil.Process] = []

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, needle: str, timeout_s: float) -> None:
        """Wait until the log shows `needle`; fail at once (with the log) if the process exits first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if needle in self.output():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"{self.log_path.name}: exited with {self.process.returncode} before "
                                     f"{needle!r}:\n{self.output()[-3000:]}")
            time.sleep(0.3)
        raise AssertionError(f"{self.log_path.name}: no {needle!r} after {timeout_s:g}s:\n{self.output()[-3000:]}")

    def remember_tree(self) -> None:
        self.known += descendants(self.process.pid)

    def kill(self) -> None:
        """SIGKILL it and all it started (no graceful shutdown: for a test whose checks are done)."""
        kill_tree(self.process.pid, self.known + descendants(self.process.pid))
        self.process.wait(10)  # reaped: no zombie left whose pid looks alive
        self.log.close()

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM, wait up to `grace_s`, then SIGKILL whatever is left of the tree."""
        self.remember_tree()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
