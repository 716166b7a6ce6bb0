"""README "The app spec": a class's `close()` runs when its replica drains (the replica actor's class, run in a
child process without Ray: it binds its channel to loopback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
from replicas.replica import Replica, ReplicaConfig

class Model:
    closed = 0

    def __call__(self, payload):
        return payload

    def close(self):
        Model.closed += 1

import __main__
__main__.Model = Model
replica = Replica(ReplicaConfig("a.d.v1#1", "a", "d", "v1", "__main__:Model", bind_host="127.0.0.1"))
assert Model.closed == 0
print("drained", replica.drain(2.0), "closed", Model.closed)
"""


def test_close_runs_when_the_replica_drains():
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "drained True closed 1" in result.stdout, result.stdout + result.stderr[-2000:]
