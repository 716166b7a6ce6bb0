"""CPU time per process during a bench run, grouped by role (psutil over /proc): what ate the cores.

    before = cpu_snapshot()
    ...                                   # the campaign
    shares = cpu_attribution(before, cpu_snapshot(), wall_s)  # [(role, cpu_s, share_of_one_core), ...]

Roles: this process ("bench client"), its descendants by their process title (Ray workers show `ray::Class`,
so the planner actor, the allocator replicas and the gateways are told apart; Ray's own daemons by name), and
every other process on the machine as "not ours" (other users' load).
"""

from __future__ import annotations

import os
import re

import psutil

__all__ = ["cpu_attribution", "cpu_snapshot", "format_attribution"]


def _role(proc: psutil.Process, ours: set[int]) -> str:
    if proc.pid == os.getpid():
        return "bench client"
    if proc.pid not in ours:
        return "not ours"
    try:
        cmd = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "ours (gone)"
    line = " ".join(cmd) if cmd else proc.name()
    match = re.match(r"ray::([A-Za-z_][\w]*)", line)
    if match:
        return f"ray::{match.group(1)}"
    for name in ("raylet", "gcs_server", "redis-server", "dashboard", "log_monitor", "monitor.py",
                 "runtime_env", "gateway"):
        if name in line:
            return name
    return os.path.basename(cmd[1] if len(cmd) > 1 and cmd[0].endswith(("python", "python3")) else cmd[0])[:40] \
        if cmd else proc.name()


def cpu_snapshot() -> dict[int, tuple[str, float]]:
    """pid -> (role, user + system CPU seconds so far) for every readable process."""
    me = psutil.Process()
    ours = {me.pid} | {p.pid for p in me.children(recursive=True)}
    out = {}
    for proc in psutil.process_iter():
        try:
            times = proc.cpu_times()
            out[proc.pid] = (_role(proc, ours), times.user + times.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def cpu_attribution(before: dict, after: dict, wall_s: float) -> list[tuple[str, float, float]]:
    """CPU seconds per role between two snapshots (a process born in between counts from zero), largest first,
    with the share of one core over `wall_s`."""
    per_role: dict[str, float] = {}
    for pid, (role, cpu) in after.items():
        start = before.get(pid, (role, 0.0))[1]
        per_role[role] = per_role.get(role, 0.0) + max(0.0, cpu - start)
    rows = sorted(per_role.items(), key=lambda kv: -kv[1])
    return [(role, round(cpu, 2), round(cpu / wall_s, 3)) for role, cpu in rows if cpu >= 0.05]


def format_attribution(rows, wall_s: float) -> str:
    total = sum(cpu for _, cpu, _ in rows)
    lines = [f"CPU over the campaign ({wall_s:.0f} s wall, {total:.1f} CPU s, {os.cpu_count()} CPUs):"]
    lines += [f"  {role:34s} {cpu:8.2f} s  {share:6.3f} cores" for role, cpu, share in rows]
    return "\n".join(lines)
