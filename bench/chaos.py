"""Chaos benchmark: raygate vs Ray Serve under faults at a fixed request rate, in one run on one machine.

Both systems serve the same model, `deploy.examples.models:Stallable` (the quickstart's Linear model; a replica
whose pid has a flag file takes 5 s per request while passing its health checks), with 3 replicas at /chaos,
max 64 ongoing requests per replica, a 10 s request deadline, 0.1 CPU per replica. raygate runs the quickstart's
gateway setting (`auto`: 2 processes on 2 cores, plus the node's warm spare) on one port (SO_REUSEPORT) with the
deployment marked idempotent; Ray Serve runs with its defaults
(one HTTP proxy per node, its own health checks) plus request_timeout_s=10 on its proxy. Each system runs in its
own process with its own fresh local Ray (bench/_chaos_system.py), one after the other, never overlapping.

Faults, each under an open-loop fixed-rate load (bench/_chaos_load.py: every request's send time, latency from
its scheduled send time, status; 0 = connection error or client timeout at 15 s):

  sigkill         SIGKILL one replica process
  sigstop         SIGSTOP one replica process (frozen: TCP still accepts, nothing answers); SIGCONT at the end
  frozen_single   the quickstart as shipped (deploy/examples/quickstart.yaml, one replica per version, /linear):
                  SIGSTOP v1's replica, so its traffic must fall back to v2 (raygate only)
  half_alive      one replica takes 5 s per request while its health checks pass; flag removed at the end
  gateway_kill    SIGKILL one raygate gateway process (raygate runs as many as the quickstart spec asks for; the
                  others keep the port) / Serve's HTTP proxy actor
  rolling_update  apply a new version (changed init argument): replicas replaced one at a time

For each fault: steady load for --steady seconds, the fault, load for --post more seconds (>= 10 for the ten-second
window), then the undo, then the system must be whole again (3 RUNNING replicas, all gateways/proxies answering)
before the next fault. Both systems run at --rate (default 100 req/s, which Ray Serve sustains here); raygate also
at --high-rate (default 1000 req/s, the failover target's rate).

Per fault and system it reports: failed requests (non-200 or no answer, sent at or after the fault), eject_s (fault
to the system taking the victim out of routing: for raygate the earliest of a gateway's ejection and the
controller dropping it; for Serve its controller no longer counting it RUNNING; for gateway_kill the time until
requests stopped failing; for rolling_update the first old replica leaving the running set), restored_s (fault to
3 RUNNING replicas again without the victim / the gateway or proxy back / the rollout done), p50/p99/p99.9/max over
requests sent in the first second and the first ten seconds after the fault, the steady p99 (before the fault),
the p99 over the two seconds after the fault and its ratio to the steady p99. Latencies include failed requests
(a client timeout counts 15 s). Serve's eject/restore waits are capped at --eject-cap seconds (null = not within).

The last line is one JSON object keyed by fault (sigkill, sigstop, half_alive, gateway_kill, rolling_update), each
with raygate / serve (at --rate) and raygate_<high-rate> entries holding failed, eject_s, restored_s, p99_1s_ms,
p99_10s_ms and more.

    .venv/bin/python bench/chaos.py                       # all faults, both systems (~7 min on 2 cores)
    .venv/bin/python bench/chaos.py --quick               # shorter windows, 1000 req/s only for sigkill (~5 min)
    .venv/bin/python bench/chaos.py --faults sigkill,sigstop --systems raygate
    .venv/bin/python bench/chaos.py --faults gateway_kill --systems raygate   # issue 15: 100 and 1000 req/s

gateway_kill also reports replacement_serving_s: the kill to the moment the replacement process began listening,
by the replacement's own clock (raygate promotes a warm spare; restored_s is when the bench's poll saw it).
"""

from __future__ import annotations

import os
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
# bench/gateway.py and bench/planner.py would shadow the packages of those names: drop bench/ from sys.path.
sys.path[:] = [ROOT] + [p for p in sys.path if os.path.abspath(p or ".") not in (ROOT, BENCH)]

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

FAULTS = ("sigkill", "sigstop", "frozen_single", "half_alive", "gateway_kill", "rolling_update")
RAYGATE_ONLY = ("frozen_single",)  # Serve runs the chaos app only
SLOW_S = 1.0  # target: no request (sent at or after the fault) waits this long because of a replica fault
REPLICA_FAULTS = ("sigkill", "sigstop", "frozen_single", "half_alive")
SYSTEMS = ("raygate", "serve")
TARGET_RATIO = 1.5  # raygate at 1000 req/s: p99 over 2 s after the kill <= 1.5x the steady p99 ...
TARGET_FAILED = 0  # ... and no failed request (idempotent deployment)
BUSY_CPU_PCT = 20.0  # other processes used more than this (% of one core) during a scenario: flag it


# --------------------------------------------------------------------------------------------- child processes

def _proc_stat(pid: int):
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[2]), int(fields[3]), int(fields[19])  # pgrp, session, starttime


def _pids_in(pgid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            stat = _proc_stat(int(entry))
            if stat is not None and (stat[0] == pgid or stat[1] == pgid):
                found.append(int(entry))
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Child:
    """bench/_chaos_system.py for one system: a session leader; its Ray processes stay in its process group."""

    def __init__(self, name: str, cmd: list[str], log_path: str) -> None:
        self.name, self.cmd, self.log_path = name, cmd, log_path
        self.proc = None
        self.extra: dict[int, int] = {}  # pid -> starttime of processes in sessions of their own (Redis)
        self.lines: list[str] = []

    def start(self) -> "Child":
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        threading.Thread(target=self._pump, daemon=True).start()
        return self

    def _pump(self) -> None:
        with open(self.log_path, "a") as log:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                line = line.rstrip("\n")
                self.lines.append(line)
                if line.startswith("PID "):
                    try:
                        pid = int(line.split()[1])
                        stat = _proc_stat(pid)
                        if stat is not None:
                            self.extra[pid] = stat[2]
                    except ValueError:
                        pass
                # progress lines from the child, and anything that looks like trouble
                if line.startswith(("[", "READY", "DONE")) or "Error" in line or "Traceback" in line:
                    print(f"  {self.name}| {line}", flush=True)

    def wait(self, timeout_s: float) -> int | None:
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace_s: float = 60.0) -> list[str]:
        """SIGTERM the child (it tears its system down), then whatever is left of its group and Redis."""
        notes = []
        if self.proc is None:
            return notes
        pgid = self.proc.pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                notes.append(f"{self.name}: did not exit {grace_s:.0f}s after SIGTERM; killed")
                self.proc.kill()
                self.proc.wait()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            left = _pids_in(pgid) + [pid for pid, start in self.extra.items()
                                     if (stat := _proc_stat(pid)) is not None and stat[2] == start]
            if not left:
                break
            notes.append(f"{self.name}: {len(left)} process(es) left after it exited; sent {sig.name}")
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
            for pid in left:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _pids_in(pgid):
                time.sleep(0.1)
        return notes


# ------------------------------------------------------------------------------------------------------ figures

def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of values, or None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100.0 * len(ordered)) - 1))]


def _ms(x):
    return round(x * 1000.0, 1) if x is not None else None


def analyse(rec: dict) -> dict:
    """Figures of one scenario from its load samples and the child's timings."""
    out = {k: rec.get(k) for k in ("eject_s", "restored_s", "replacement_serving_s", "eject_gateway_s",
                                   "eject_controller_s",
                                   "victim_id", "victim_pid", "undo", "whole_after_s", "loadavg_before",
                                   "loadavg_after", "other_cpu_pct")}
    out["notes"] = list(rec.get("notes", []))
    if rec.get("error"):
        out["error"] = rec["error"]
    path = rec.get("load_file")
    if not path or not os.path.exists(path):
        out["error"] = out.get("error") or "no load samples"
        return out
    with open(path) as f:
        load = json.load(f)
    t_fault, steady_s = rec["t_fault"], rec["steady_s"]
    t, lat, status = load["t"], load["lat"], load["status"]
    replicas = load.get("replicas", [])

    def window(a: float, b: float):
        return [i for i in range(len(t)) if t_fault + a <= t[i] < t_fault + b]

    after = window(0.0, 1e9)
    # failed: every non-200 answered (or given up on) at or after the fault, so requests in flight when it struck
    # count too; failed_before_fault: those that had already failed before it (normally 0)
    failed = [i for i in range(len(t)) if status[i] != 200 and t[i] + lat[i] >= t_fault]
    before_failed = sum(1 for i in range(len(t)) if t[i] + lat[i] < t_fault and status[i] != 200)
    out["sent"] = len(t)
    out["sent_after_fault"] = len(after)
    out["failed"] = len(failed)
    out["failed_before_fault"] = before_failed
    kinds: dict = {}
    for i in failed:
        key = "no_answer" if status[i] == 0 else str(status[i])
        kinds[key] = kinds.get(key, 0) + 1
    out["failed_by_status"] = kinds
    out["failed_in_flight"] = sum(1 for i in failed if t[i] < t_fault)  # sent before the fault, failed after
    out["client_errors"] = load.get("errors", {})
    if failed:
        out["failed_sent_between_s"] = [round(t[failed[0]] - t_fault, 3), round(t[failed[-1]] - t_fault, 3)]
    out["load_lag_max_s"] = load.get("lag_max_s")
    steady = [lat[i] for i in window(-steady_s + 0.5, 0.0)]
    out["steady_p50_ms"], out["steady_p99_ms"] = _ms(pct(steady, 50)), _ms(pct(steady, 99))
    for name, (a, b) in (("1s", (0.0, 1.0)), ("2s", (0.0, 2.0)), ("10s", (0.0, 10.0))):
        values = [lat[i] for i in window(a, b)]
        out[f"n_{name}"] = len(values)
        out[f"p50_{name}_ms"] = _ms(pct(values, 50))
        out[f"p99_{name}_ms"] = _ms(pct(values, 99))
        out[f"p999_{name}_ms"] = _ms(pct(values, 99.9))
        out[f"max_{name}_ms"] = _ms(max(values) if values else None)
    out["ratio_2s"] = round(out["p99_2s_ms"] / out["steady_p99_ms"], 2) \
        if out["p99_2s_ms"] is not None and out["steady_p99_ms"] else None
    slow = [i for i in after if status[i] == 200 and lat[i] >= 1.0]
    out["slow_ge_1s_after_fault"] = len(slow)
    # the slowest request of the fault: every request sent at or after it, or in flight when it struck, failed
    # ones included (a client timeout counts its full wait)
    struck = [i for i in range(len(t)) if t[i] + lat[i] >= t_fault]
    if struck:
        worst = max(struck, key=lambda i: lat[i])
        out["slowest_ms"] = _ms(lat[worst])
        out["slowest_sent_s"] = round(t[worst] - t_fault, 3)  # its send time, after the fault (negative: before)
        out["over_1s"] = sum(1 for i in struck if lat[i] >= SLOW_S)
    if rec.get("fault") == "gateway_kill":
        # no routing decision to time: the kernel stops handing connections to a dead process at once; what a
        # client sees is how long requests kept failing
        load_end = t[-1] if t else t_fault
        if failed and t[failed[-1]] > load_end - 0.5:
            out["eject_s"] = None
            out["eject_note"] = (f"gateway_kill: requests kept failing to the end of the load window "
                                 f"({load_end - t_fault:.1f} s after the fault)")
        else:
            out["eject_s"] = round(t[failed[-1]] - t_fault, 3) if failed else 0.0
            out["eject_note"] = "gateway_kill: time from the fault to the last failed request's send time"
    if replicas and failed:
        out["failed_replicas"] = sorted({replicas[load["replica"][i]] for i in failed if load["replica"][i] >= 0})
    return out


def fmt(x, spec="{:.1f}", none="-") -> str:
    return spec.format(x) if x is not None else none


def print_table(rows: list[tuple[str, str, dict]], rate: float, high_rate: float, eject_cap: float) -> None:
    cols = [("fault", 15), ("system", 14), ("failed", 7), ("eject s", 8), ("restore s", 10), ("steady p99", 11),
            ("1s p50", 8), ("1s p99", 8), ("1s p99.9", 9), ("1s max", 8), ("10s p50", 8), ("10s p99", 8),
            ("10s p99.9", 10), ("10s max", 8), ("slowest", 8), (">=1s", 6), ("2s p99", 8), ("x steady", 9),
            ("other CPU%", 11)]
    header = "".join(f"{name:<{w}}" if i < 2 else f"{name:>{w}}" for i, (name, w) in enumerate(cols))
    print()
    print(f"latencies in ms over requests sent in the window after the fault (failed ones included); "
          f"eject/restore in s after the fault (- = not within {eject_cap:.0f} s or not applicable)")
    print(header)
    print("-" * len(header))
    last_fault = None
    for fault, label, r in rows:
        if last_fault is not None and fault != last_fault:
            print()
        last_fault = fault
        if r.get("error") and r.get("sent") is None:
            print(f"{fault:<15}{label:<14}  FAILED: {r['error'][:100]}")
            continue
        vals = [str(r["failed"]) + (" !" if r["failed"] else ""), fmt(r["eject_s"], "{:.2f}"),
                fmt(r["restored_s"], "{:.2f}"), fmt(r["steady_p99_ms"]),
                fmt(r["p50_1s_ms"]), fmt(r["p99_1s_ms"]), fmt(r["p999_1s_ms"]), fmt(r["max_1s_ms"]),
                fmt(r["p50_10s_ms"]), fmt(r["p99_10s_ms"]), fmt(r["p999_10s_ms"]), fmt(r["max_10s_ms"]),
                fmt(r.get("slowest_ms")), fmt(r.get("over_1s"), "{}"), fmt(r["p99_2s_ms"]), fmt(r["ratio_2s"], "{:.2f}"),
                fmt(r.get("other_cpu_pct"), "{:.0f}") + (" !" if (r.get("other_cpu_pct") or 0) >= BUSY_CPU_PCT
                                                         else "")]
        line = f"{fault:<15}{label:<14}" + "".join(f"{v:>{w}}" for v, (_, w) in zip(vals, cols[2:]))
        print(line)
    print()


# --------------------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"subset of {','.join(FAULTS)}")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"subset of {','.join(SYSTEMS)}")
    parser.add_argument("--rate", type=float, default=100.0, help="req/s for both systems (default 100)")
    parser.add_argument("--high-rate", type=float, default=1000.0,
                        help="raygate also runs every fault at this rate (default 1000; 0: skip)")
    parser.add_argument("--high-rate-faults", default=None,
                        help="faults run at --high-rate (default: all; --quick: sigkill)")
    parser.add_argument("--steady", type=float, default=4.0, help="seconds of load before the fault (default 4)")
    parser.add_argument("--post", type=float, default=11.0, help="seconds of load after the fault (default 11)")
    parser.add_argument("--eject-cap", type=float, default=30.0,
                        help="longest wait after the fault for ejection/restoration (default 30)")
    parser.add_argument("--restore-cap", type=float, default=60.0,
                        help="longest wait after the fault for the system to be whole again (default 60)")
    parser.add_argument("--quick", action="store_true", help="2 s steady, 10.5 s after, 1000 req/s only for sigkill")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, raw samples)")
    parser.add_argument("--from-dir", default=None,
                        help="run nothing: redo the figures from a work directory kept by an earlier --keep run")
    args = parser.parse_args(argv)
    if args.quick:
        args.steady, args.post, args.eject_cap, args.restore_cap = 2.5, 10.5, 20.0, 40.0
        if args.high_rate_faults is None:
            args.high_rate_faults = "sigkill"
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    high_faults = [f.strip() for f in (args.high_rate_faults or ",".join(FAULTS)).split(",") if f.strip()]
    for name, chosen, allowed in (("faults", faults, FAULTS), ("systems", systems, SYSTEMS),
                                  ("high-rate-faults", high_faults, FAULTS)):
        unknown = sorted(set(chosen) - set(allowed))
        if unknown:
            parser.error(f"unknown {name} {unknown}; choose from {allowed}")
    if args.post < 10.0:
        parser.error("--post must be at least 10 (the ten-second window)")

    cfg = {"steady_s": args.steady, "post_s": args.post, "eject_cap_s": args.eject_cap,
           "restore_cap_s": args.restore_cap, "whole_timeout_s": 120.0,
           "client_timeout_s": 15.0, "warmup_s": 3.0}
    work = tempfile.mkdtemp(prefix="rgc-", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    loads = {"start": [round(x, 2) for x in os.getloadavg()]}
    print(f"chaos benchmark: faults {', '.join(faults)}; systems {', '.join(systems)}; {args.rate:g} req/s "
          f"(raygate also {args.high_rate:g} req/s for {', '.join(f for f in faults if f in high_faults) or 'none'}); "
          f"{args.steady:g} s steady + {args.post:g} s after each fault; {os.cpu_count()} CPUs, "
          f"load {loads['start']}; work dir {work}", flush=True)

    records: dict[str, dict] = {}
    notes: list[str] = []
    failed_systems = []
    try:
        for system in systems if not args.from_dir else ():
            plan = []
            for fault in faults:
                if system != "raygate" and fault in RAYGATE_ONLY:
                    continue
                plan.append({"fault": fault, "rate": args.rate})
                if system == "raygate" and args.high_rate and fault in high_faults:
                    plan.append({"fault": fault, "rate": args.high_rate})
            sys_work = os.path.join(work, system[:2])
            os.makedirs(sys_work, exist_ok=True)
            cmd = [sys.executable, os.path.join(BENCH, "_chaos_system.py"), "--system", system, "--port",
                   str(free_port()), "--work-dir", sys_work, "--out-dir", work, "--plan", json.dumps(plan),
                   "--config", json.dumps(cfg)]
            loads[f"before_{system}"] = [round(x, 2) for x in os.getloadavg()]
            print(f"[{system}] starting ({len(plan)} scenarios)", flush=True)
            child = Child(system, cmd, os.path.join(work, f"{system}.log")).start()
            budget = 240 + len(plan) * (args.steady + args.post + args.eject_cap + args.restore_cap + 150)
            rc = child.wait(budget)
            if rc is None:
                notes.append(f"{system}: still running after {budget:.0f}s; stopped")
            elif rc != 0:
                notes.append(f"{system}: exited with {rc}")
            notes += child.stop()
            path = os.path.join(work, f"{system}.json")
            if os.path.exists(path):
                with open(path) as f:
                    records[system] = json.load(f)
                if records[system].get("error"):
                    notes.append(f"{system}: {records[system]['error']}")
                    failed_systems.append(system)
            else:
                notes.append(f"{system}: no results (see {child.log_path}): "
                             + " / ".join(child.lines[-5:])[:400])
                failed_systems.append(system)
    except KeyboardInterrupt:
        notes.append("interrupted")
        failed_systems.append("interrupted")
    finally:
        loads["end"] = [round(x, 2) for x in os.getloadavg()]
    if args.from_dir:
        shutil.rmtree(work, ignore_errors=True)
        work = args.from_dir
        for system in systems:
            path = os.path.join(work, f"{system}.json")
            if os.path.exists(path):
                with open(path) as f:
                    records[system] = json.load(f)
        notes.append(f"figures redone from {work}; machine load averages are today's, not the run's")

    # figures
    summary: dict = {"benchmark": "chaos"}
    rows = []
    for fault in faults:
        entry: dict = {}
        for system in systems:
            for rec in (records.get(system) or {}).get("scenarios", []):
                if rec["fault"] != fault:
                    continue
                label = system if rec["rate"] == args.rate else f"{system}_{int(rec['rate'])}"
                figures = analyse(rec)
                figures["rate"] = rec["rate"]
                if figures.get("sent") is None:
                    failed_systems.append(f"{system}:{fault}@{int(rec['rate'])}")
                elif system == "serve" and fault in ("sigstop", "half_alive") and figures.get("eject_s") is None:
                    figures["eject_note"] = (f"Serve did not take the replica out of service within "
                                             f"{rec.get('monitor_end_s', args.eject_cap):.0f} s of the fault "
                                             f"(reported as null; its default health check: every 10 s, 30 s "
                                             f"timeout; a half-alive replica passes it)")
                if system == "raygate" and fault == "half_alive" and figures.get("restored_s") is None \
                        and figures.get("sent") is not None:
                    figures["restore_note"] = ("the controller keeps a half-alive replica (its health checks "
                                               "pass); the gateways eject it: the count never dropped")
                if fault == "rolling_update":
                    figures["eject_note"] = "rolling_update: time to the first old replica leaving the running set"
                entry[label] = figures
                rows.append((fault, f"{system}@{int(rec['rate'])}", figures))
        rg, sv = entry.get("raygate"), entry.get("serve")
        if rg and sv and rg.get("sent") is not None and sv.get("sent") is not None:
            def ratio(key):
                a, b = rg.get(key), sv.get(key)
                return round(a / b, 3) if a is not None and b else None

            # raygate's figure over Serve's, same rate, same run (below 1: raygate better)
            entry["raygate_over_serve"] = {k: ratio(k) for k in ("p99_1s_ms", "p99_10s_ms", "p99_2s_ms",
                                                                 "max_10s_ms", "eject_s", "restored_s")}
            entry["raygate_over_serve"]["failed"] = [rg["failed"], sv["failed"]]
        summary[fault] = entry

    # targets: raygate at the high rate
    hi = f"raygate_{int(args.high_rate)}"
    targets = {}
    for fault in faults:
        r = summary.get(fault, {}).get(hi) or (summary.get(fault, {}).get("raygate")
                                               if args.rate == args.high_rate else None)
        if r and r.get("sent") is not None:
            targets[fault] = {"failed": r["failed"], "ratio_2s": r["ratio_2s"],
                              "met": r["failed"] <= TARGET_FAILED and r["ratio_2s"] is not None
                              and r["ratio_2s"] <= TARGET_RATIO, "slowest_ms": r.get("slowest_ms")}
            if fault in REPLICA_FAULTS:  # issue 8: 0 failed and no request over 1 s
                targets[fault]["met_1s"] = r["failed"] == 0 and (r.get("slowest_ms") or 0) < SLOW_S * 1000
    summary["targets"] = {"rate": args.high_rate, "failed_max": TARGET_FAILED, "ratio_2s_max": TARGET_RATIO,
                          "slowest_max_ms": SLOW_S * 1000, "by_fault": targets,
                          "sigkill_met": targets.get("sigkill", {}).get("met"),
                          "no_request_over_1s": all(v.get("met_1s", True) for v in targets.values())}
    summary["rate"] = args.rate
    summary["high_rate"] = args.high_rate
    summary["config"] = dict(cfg, status_poll_s={"raygate": 0.1, "serve": 0.2})
    summary["setup"] = {"replicas": 3, "request_timeout_s": 10, "max_ongoing_requests": 64, "stall_s": 5.0,
                        "raygate_gateways": (records.get("raygate") or {}).get("gateways"),
                        "raygate_idempotent": True, "frozen_single": "quickstart.yaml as shipped (1 replica per "
                        "version, v1 90 / v2 10, idempotent), v1's replica frozen",
                        "serve": "defaults (1 proxy per node, health check every 10 s, 30 s timeout), "
                                 "http request_timeout_s=10, max_ongoing_requests=64"}
    summary["startup_s"] = {s: (records.get(s) or {}).get("startup_s") for s in systems}
    summary["machine"] = {"nproc": os.cpu_count(), "platform": platform.platform(), "loadavg": loads}
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        summary["git"] = head + ("+dirty" if dirty else "")
    except Exception:  # noqa: BLE001
        summary["git"] = None
    summary["notes"] = notes
    summary["failed_systems"] = failed_systems
    try:
        import ray

        summary["versions"] = {"python": platform.python_version(), "ray": ray.__version__}
    except Exception:  # noqa: BLE001
        summary["versions"] = {"python": platform.python_version()}

    print_table(rows, args.rate, args.high_rate, args.eject_cap)
    for fault, label, r in rows:
        extra = []
        if r.get("failed"):
            extra.append(f"failed {r['failed']} by status {r.get('failed_by_status')} sent between "
                         f"{r.get('failed_sent_between_s')} s after the fault; client errors {r.get('client_errors')}")
        if r.get("replacement_serving_s") is not None:
            extra.append(f"replacement serving {r['replacement_serving_s']} s after the kill (its own clock; "
                         f"restore s is when the bench's poll saw it)")
        if r.get("eject_gateway_s") is not None or r.get("eject_controller_s") is not None:
            extra.append(f"eject: gateway {r.get('eject_gateway_s')} s, controller {r.get('eject_controller_s')} s")
        for key in ("eject_note", "restore_note"):
            if r.get(key):
                extra.append(r[key])
        extra += r.get("notes", [])
        if r.get("load_lag_max_s") and r["load_lag_max_s"] > 0.05:
            extra.append(f"load generator fell behind its schedule by up to {r['load_lag_max_s']} s "
                         f"(charged to latency)")
        for line in extra:
            print(f"  {fault} {label}: {line}")
    compared = [(f, summary[f]["raygate_over_serve"]) for f in faults if summary.get(f, {}).get("raygate_over_serve")]
    if compared:
        print(f"\nraygate / Ray Serve at {args.rate:g} req/s, same run "
              f"(below 1: raygate lower; failed: raygate vs Serve):")
        for fault, r in compared:
            print(f"  {fault:<15} p99 1s {fmt(r['p99_1s_ms'], '{:.3g}x', 'n/a')}, p99 10s "
                  f"{fmt(r['p99_10s_ms'], '{:.3g}x', 'n/a')}, max 10s {fmt(r['max_10s_ms'], '{:.3g}x', 'n/a')}, "
                  f"eject {fmt(r['eject_s'], '{:.3g}x', 'n/a')}, restore {fmt(r['restored_s'], '{:.2f}x', 'n/a')}, "
                  f"failed {r['failed'][0]} vs {r['failed'][1]}")
    if targets:
        print(f"\nraygate at {args.high_rate:g} req/s, target: 0 failed and 2 s p99 <= {TARGET_RATIO}x steady: "
              + ", ".join(f"{f} {'met' if v['met'] else 'NOT met'} ({v['failed']} failed, "
                          f"{fmt(v['ratio_2s'], '{:.2f}')}x)" for f, v in targets.items()))
        print(f"raygate at {args.high_rate:g} req/s, target: 0 failed and no request over {SLOW_S:g} s for a replica "
              f"fault: " + ", ".join(f"{f} {'met' if v['met_1s'] else 'NOT met'} (slowest "
                                     f"{fmt(v['slowest_ms'], '{:.0f}')} ms)"
                                     for f, v in targets.items() if "met_1s" in v))
    busy = sorted(f"{label}:{fault}" for fault, label, r in rows if (r.get("other_cpu_pct") or 0) >= BUSY_CPU_PCT)
    summary["busy_scenarios"] = busy
    summary["machine_busy"] = bool(busy)
    if busy:
        print(f"\nWARNING: other processes used >= {BUSY_CPU_PCT:.0f}% CPU (of {100 * (os.cpu_count() or 1)}%) "
              f"during {', '.join(busy)} ('other CPU%'): those figures show a loaded machine, not the system")
    for note in notes:
        print(f"note: {note}")
    print(f"machine: {os.cpu_count()} CPUs, load averages {loads}")
    if args.keep or failed_systems or args.from_dir:
        print(f"logs and raw samples kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(summary, separators=(",", ":")), flush=True)
    return 1 if failed_systems else 0


if __name__ == "__main__":
    sys.exit(main())
