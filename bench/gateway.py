"""Gateway benchmark: raygate vs Ray Serve vs an in-process ceiling, with wrk, in one run on one machine.

Systems, each in its own process (its own fresh local Ray where it has one), one after the other, never overlapping:

  ceiling        aiohttp on uvloop computing the quickstart's Linear model in-process (bench/_ceiling_server.py)
  raygate        embedded Redis + local Ray + the Platform with deploy/examples/quickstart.yaml, the shipped
                 gateway settings: num_gateways "auto" (one per core, 2 to 8), access log on
                 (bench/_raygate_server.py)
  raygate_1gw    the same with one gateway process, so the shipped default is chosen from figures of one run
  serve_default  Ray Serve, the same model in a deployment with 2 replicas, Serve's defaults (bench/_serve_app.py)
  serve_tuned    the same with max_ongoing_requests raised, access logs off and user code / router on the main
                 event loops (see TUNED_ENV / TUNED_OPTIONS in bench/_serve_app.py)

For each: wait for its READY line, check the answers (y matches the model), warm up with wrk, then
`wrk -t2 -c{8,64} -d{duration}s --timeout 10s --latency -s bench/post.lua URL`, then stop it (SIGTERM, then its
process group) and make sure nothing of it is left before the next one starts. Both Ray Serve runs use
RAY_worker_niceness=0 (Ray's own default is 15), so their proxy and replicas serve at niceness 0 as raygate's
gateways and replicas do once ready.

Prints a table, then (last line) one JSON object: raygate_rps, raygate_p99_ms, serve_rps, serve_p99_ms,
ceiling_rps, ratio_to_ceiling, ratio_to_serve (64 connections), ratio_to_ceiling_c8 (8 connections),
raygate_1gw_* and default_to_1gw / default_to_1gw_c8 (the shipped default's req/s over one gateway's), per-run
details, targets and whether they were met. serve_* is the better Serve configuration at 64 connections
(serve_config says which). Exit status 1 when a system could not be run or answered wrongly; wrk errors are
flagged in the table and in the JSON (errors_flagged) without failing the run.

    .venv/bin/python bench/gateway.py               # 15 s runs
    .venv/bin/python bench/gateway.py --quick       # 5 s runs
    .venv/bin/python bench/gateway.py --duration 8 --systems ceiling,raygate
    .venv/bin/python bench/gateway.py --systems raygate_1gw --baseline-tree /tmp/gw-base   # before/after

With --baseline-tree, each raygate system is first run from that checkout (its own bench/_raygate_server.py, its
code on PYTHONPATH, cwd there) as baseline_<system>, then from this one; the table and the JSON add the ratios
(<system>_to_baseline_rps, <system>_to_baseline_gateway_cpu). For raygate systems each run also reports the
gateway processes' CPU time per request (`ray::Gateway` processes, user + system, over wrk's request count),
the figure other processes' load moves least.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
POST_LUA = BENCH / "post.lua"
SYSTEMS = ("ceiling", "raygate", "raygate_1gw", "serve_default", "serve_tuned")
BASELINE_PREFIX = "baseline_"  # with --baseline-tree: baseline_raygate_1gw is raygate_1gw served by that tree
CONNECTIONS = (8, 64)
WRK_THREADS = 2
WRK_TIMEOUT = "10s"  # wrk's default 2 s would drop Serve's slowest answers from the latency figures
READY_TIMEOUT_S = 240.0
TARGET_RATIO_C64 = 0.5  # raygate at 64 connections: >= 50% of the ceiling's req/s ...
TARGET_P99_MS_C64 = 15.0  # ... with p99 under 15 ms
TARGET_RATIO_C8 = 0.25  # raygate at 8 connections: >= 25% of the ceiling's req/s
BUSY_CPU_PCT = 10.0  # other processes using more than this (% of one core) during a run: say so
CHECK_REQUESTS = 20  # correctness requests before and after the load (both quickstart versions get some)

# This file is bench/gateway.py: with bench/ on sys.path, `import gateway` would find it instead of the package.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() not in (ROOT, BENCH)]


# --------------------------------------------------------------------------------------------- the model's answer

def request_body() -> bytes:
    """The body wrk sends (read from bench/post.lua, so the check and the load use the same input)."""
    match = re.search(r"wrk\.body\s*=\s*'([^']*)'", POST_LUA.read_text())
    if not match:
        raise SystemExit(f"{POST_LUA}: no wrk.body = '...' line")
    return match.group(1).encode()


def expected_y(body: bytes) -> float:
    from deploy.examples.models import (
        Linear,  # both quickstart versions compute the same (scale 1, bias 0)
    )

    return Linear()(json.loads(body))["y"]


def check_answers(url: str, body: bytes, want: float, n: int = CHECK_REQUESTS) -> str | None:
    """None when n POSTs all answer 200 with y == want; else what went wrong."""
    for _ in range(n):
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status, payload = resp.status, resp.read()
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return f"request failed: {exc!r}"
        if status != 200:
            return f"status {status}: {payload[:200]!r}"
        try:
            y = json.loads(payload)["y"]
        except (ValueError, KeyError, TypeError):
            return f"not {{'y': number}}: {payload[:200]!r}"
        if not isinstance(y, (int, float)) or abs(y - want) > 1e-9 * max(1.0, abs(want)):
            return f"y = {y!r}, the model says {want!r}"
    return None


# --------------------------------------------------------------------------------------------------------- wrk

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def to_ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"unknown wrk time {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(out: str) -> dict:
    """Requests/sec, p50/p99 (ms), request count, socket errors and non-2xx/3xx answers from wrk --latency."""
    result: dict = {"rps": None, "p50_ms": None, "p99_ms": None, "requests": None,
                    "socket_errors": 0, "non2xx": 0}
    if m := re.search(r"^Requests/sec:\s+([0-9.]+)", out, re.M):
        result["rps"] = float(m.group(1))
    if m := re.search(r"^\s+50%\s+(\S+)", out, re.M):
        result["p50_ms"] = to_ms(m.group(1))
    if m := re.search(r"^\s+99%\s+(\S+)", out, re.M):
        result["p99_ms"] = to_ms(m.group(1))
    if m := re.search(r"^\s+(\d+) requests in", out, re.M):
        result["requests"] = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        result["socket_errors"] = sum(int(g) for g in m.groups())
        result["socket_error_detail"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        result["non2xx"] = int(m.group(1))
    result["errors"] = result["socket_errors"] + result["non2xx"]
    return result


def run_wrk(url: str, connections: int, duration_s: int) -> tuple[dict, str]:
    cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{duration_s}s", "--timeout", WRK_TIMEOUT,
           "--latency", "-s", str(POST_LUA), url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60)
    out = proc.stdout + proc.stderr
    parsed = parse_wrk(out)
    if proc.returncode != 0 or parsed["rps"] is None:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}):\n{out}")
    return parsed, out


# --------------------------------------------------------------------------------------------- child processes

def _proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(pgrp, session, starttime) of a live pid, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    if fields[0] == "Z":
        return None  # a zombie holds nothing; its parent (or init) reaps it
    return int(fields[2]), int(fields[3]), int(fields[19])


def _pids_in(pgid: int) -> list[int]:
    """Live processes in process group or session `pgid` (the child is both leader of its group and session)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            stat = _proc_stat(int(entry))
            if stat is not None and (stat[0] == pgid or stat[1] == pgid):
                found.append(int(entry))
    return found


def _cpu_ticks_by_pid() -> dict[int, tuple[int, int, int, int]]:
    """pid -> (pgrp, session, ppid, utime+stime ticks) for every live process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()
        out[int(entry)] = (int(fields[2]), int(fields[3]), int(fields[1]), int(fields[11]) + int(fields[12]))
    return out


def foreign_cpu(before: dict, after: dict, ours: set[int], wall_s: float) -> float:
    """CPU% (100 = one core) used during a run by processes that are not the benchmark's: not this process, its
    children (wrk), nor the server's process group/session. A lower bound: processes that exited are missed."""
    me = os.getpid()
    ticks = 0
    for pid, (pgrp, sid, ppid, used) in after.items():
        if pid == me or ppid == me or pgrp in ours or sid in ours or pid in ours:
            continue
        ticks += used - before.get(pid, (0, 0, 0, used if pid in before else 0))[3]
    return round(100.0 * ticks / os.sysconf("SC_CLK_TCK") / wall_s, 1)


@dataclass
class Server:
    """One system's server process, a session leader whose descendants stay in its process group."""

    name: str
    cmd: list[str]
    log_path: Path
    tree: Path = ROOT  # the checkout whose code the server runs (cwd and PYTHONPATH)
    proc: subprocess.Popen | None = None
    url: str | None = None
    extra: dict = field(default_factory=dict)  # pid -> starttime, reported with `PID <pid>` (own sessions)
    _ready: threading.Event = field(default_factory=threading.Event)
    _lines: list = field(default_factory=list)

    def start(self) -> "Server":
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.tree), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(self.cmd, cwd=self.tree, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        with open(self.log_path, "w") as log:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                self._lines.append(line)
                if line.startswith("READY ") and self.url is None:
                    self.url = line.split(None, 1)[1].strip()
                    self._ready.set()
                elif line.startswith("PID "):
                    pid = int(line.split()[1])
                    stat = _proc_stat(pid)
                    if stat is not None:
                        self.extra[pid] = stat[2]
        self._ready.set()  # EOF: it exited (or closed stdout) without being ready

    def wait_ready(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(0.2):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: not ready in {timeout_s:.0f}s\n{self.tail()}")
        if self.url is None:
            raise RuntimeError(f"{self.name}: exited with {self.proc.wait()} before READY\n{self.tail()}")
        return self.url

    def tail(self, n: int = 30) -> str:
        return "".join(self._lines[-n:])

    def stop(self, grace_s: float = 45.0) -> list[str]:
        """SIGTERM the child (it tears down its own Ray/Redis), then its group; return notes on forced kills."""
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
        for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
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
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and (_pids_in(pgid) or any(
                    (stat := _proc_stat(pid)) is not None and stat[2] == start for pid, start in self.extra.items())):
                time.sleep(0.1)
        if _pids_in(pgid):
            raise RuntimeError(f"{self.name}: processes {_pids_in(pgid)} survived SIGKILL")
        return notes


def server_command(name: str, port: int, work: Path, tree: Path = ROOT) -> list[str]:
    """The command that serves `name`; raygate systems run `tree`'s own bench/_raygate_server.py."""
    py = sys.executable
    if name.startswith(BASELINE_PREFIX):  # the same system from the baseline tree, in a work dir of its own
        return server_command(name[len(BASELINE_PREFIX):], port, work / "baseline", tree)
    if name in ("raygate", "raygate_1gw"):
        bench = tree / "bench"
        return [py, str(bench / "_raygate_server.py"), "--port", str(port), "--work-dir",
                str(work / ("rg" if name == "raygate" else "rg1"))] + (["--gateways", "1"] if name == "raygate_1gw" else [])
    if name == "ceiling":
        return [py, str(BENCH / "_ceiling_server.py"), "--port", str(port)]
    if name in ("serve_default", "serve_tuned"):
        return [py, str(BENCH / "_serve_app.py"), "--mode", name.split("_", 1)[1], "--port", str(port),
                "--work-dir", str(work / name.replace("serve_", "s"))]
    raise ValueError(name)


# ------------------------------------------------------------------------------------------------------- runs

def _gateway_pids(session: int) -> list[int]:
    """raygate's gateway actor processes among a server's (Ray names an actor's process `ray::Gateway...`)."""
    found = []
    for pid in _pids_in(session):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::Gateway"):
                found.append(pid)
        except OSError:
            continue
    return found


def _gateway_cpu_us(before: dict, after: dict, pids: list[int], requests: int | None) -> float | None:
    """CPU-us per request of the gateway processes over a run (None when not raygate or nothing answered)."""
    if not pids or not requests:
        return None
    ticks = sum(after[pid][3] - before[pid][3] for pid in pids if pid in before and pid in after)
    return round(ticks / os.sysconf("SC_CLK_TCK") / requests * 1e6, 2)


def bench_system(name: str, work: Path, duration_s: int, warmup_s: int, body: bytes, want: float,
                 log=print, tree: Path = ROOT) -> dict:
    from deploy.embedded import free_port

    record: dict = {"name": name, "runs": {}, "ok": False, "notes": [], "tree": str(tree)}
    server = Server(name, server_command(name, free_port(), work, tree), work / f"{name}.log", tree)
    started = time.monotonic()
    try:
        server.start()
        url = server.wait_ready(READY_TIMEOUT_S)
        record["startup_s"] = round(time.monotonic() - started, 1)
        log(f"[{name}] ready at {url} after {record['startup_s']} s")
        problem = check_answers(url, body, want)
        if problem:
            raise RuntimeError(f"{name}: wrong answer before the load: {problem}")
        run_wrk(url, 64, warmup_s)
        for connections in CONNECTIONS:
            time.sleep(1.0)  # let anything queued by the previous run drain
            load = os.getloadavg()[0]
            ours = {server.proc.pid, *server.extra}
            gateways = _gateway_pids(server.proc.pid)
            ticks_before, t0 = _cpu_ticks_by_pid(), time.monotonic()
            parsed, out = run_wrk(url, connections, duration_s)
            ticks_after = _cpu_ticks_by_pid()
            parsed["other_cpu_pct"] = foreign_cpu(ticks_before, ticks_after, ours, time.monotonic() - t0)
            # The figure a loaded machine moves least: the gateway processes' own CPU over wrk's request count.
            parsed["gateway_cpu_us_per_request"] = _gateway_cpu_us(ticks_before, ticks_after, gateways,
                                                                   parsed["requests"])
            parsed["loadavg_1m_before"] = round(load, 2)
            record["runs"][connections] = parsed
            (work / f"{name}.wrk.c{connections}.txt").write_text(out)
            cpu = parsed["gateway_cpu_us_per_request"]
            log(f"[{name}] c={connections}: {parsed['rps']:.0f} req/s, p50 {parsed['p50_ms']:.2f} ms, "
                f"p99 {parsed['p99_ms']:.2f} ms, errors {parsed['errors']}"
                f"{f', gateway CPU {cpu} us/request' if cpu is not None else ''}; other processes used "
                f"{parsed['other_cpu_pct']:.0f}% CPU meanwhile")
        time.sleep(1.0)
        problem = check_answers(url, body, want)
        if problem:
            raise RuntimeError(f"{name}: wrong answer after the load: {problem}")
        record["ok"] = True
    except Exception as exc:  # noqa: BLE001 - one system failing must not lose the others' figures
        record["error"] = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else repr(exc)
        log(f"[{name}] FAILED: {exc}")
    finally:
        try:
            record["notes"] += server.stop()
        except Exception as exc:  # noqa: BLE001
            record["notes"].append(f"teardown: {exc}")
            record["ok"] = False
        for note in record["notes"]:
            log(f"[{name}] note: {note}")
    return record


def _ratio(a, b):
    return round(a / b, 4) if a is not None and b else None


def _r(value, digits=2):
    return round(value, digits) if value is not None else None


def _gateway_cpu_figures(records: dict, fig) -> dict:
    """Each raygate system's gateway CPU per request and, with --baseline-tree, ours over the baseline's."""
    out: dict = {}
    for name in [n for n in records if n.startswith("raygate") or n.startswith(BASELINE_PREFIX)]:
        for connections, suffix in ((64, ""), (8, "_c8")):
            out[f"{name}_gateway_cpu_us{suffix}"] = fig(name, connections, "gateway_cpu_us_per_request")
            if name.startswith(BASELINE_PREFIX):  # ours over the baseline's, same system, back to back
                ours = name[len(BASELINE_PREFIX):]
                out[f"{name}_rps{suffix}"] = _r(fig(name, connections, "rps"), 1)
                out[f"{ours}_to_baseline_rps{suffix}"] = _ratio(fig(ours, connections, "rps"),
                                                                fig(name, connections, "rps"))
                out[f"{ours}_to_baseline_gateway_cpu{suffix}"] = _ratio(
                    fig(ours, connections, "gateway_cpu_us_per_request"),
                    fig(name, connections, "gateway_cpu_us_per_request"))
    return out


def summarise(records: dict, args, loads: dict) -> dict:
    def fig(name, connections, key):
        rec = records.get(name)
        run = rec["runs"].get(connections) if rec else None
        return run.get(key) if run else None

    serve_candidates = [n for n in ("serve_default", "serve_tuned") if fig(n, 64, "rps") is not None]
    serve_best = max(serve_candidates, key=lambda n: fig(n, 64, "rps")) if serve_candidates else None

    summary: dict = {"benchmark": "gateway"}
    for prefix, name in (("raygate", "raygate"), ("raygate_1gw", "raygate_1gw"), ("serve", serve_best),
                         ("ceiling", "ceiling"),
                         ("serve_default", "serve_default"), ("serve_tuned", "serve_tuned")):
        for connections, suffix in ((64, ""), (8, "_c8")):
            summary[f"{prefix}_rps{suffix}"] = _r(fig(name, connections, "rps"), 1) if name else None
            summary[f"{prefix}_p50_ms{suffix}"] = _r(fig(name, connections, "p50_ms"), 3) if name else None
            summary[f"{prefix}_p99_ms{suffix}"] = _r(fig(name, connections, "p99_ms"), 3) if name else None
            summary[f"{prefix}_errors{suffix}"] = fig(name, connections, "errors") if name else None
    summary.update(_gateway_cpu_figures(records, fig))
    summary["serve_config"] = serve_best.replace("serve_", "") if serve_best else None
    summary["ratio_to_ceiling"] = _ratio(summary["raygate_rps"], summary["ceiling_rps"])
    summary["ratio_to_ceiling_c8"] = _ratio(summary["raygate_rps_c8"], summary["ceiling_rps_c8"])
    summary["ratio_to_serve"] = _ratio(summary["raygate_rps"], summary["serve_rps"])
    summary["ratio_to_serve_c8"] = _ratio(summary["raygate_rps_c8"], summary["serve_rps_c8"])
    summary["default_to_1gw"] = _ratio(summary["raygate_rps"], summary["raygate_1gw_rps"])
    summary["default_to_1gw_c8"] = _ratio(summary["raygate_rps_c8"], summary["raygate_1gw_rps_c8"])
    summary["default_gateways"] = _default_gateways()
    summary["serve_ratio_to_ceiling"] = _ratio(summary["serve_rps"], summary["ceiling_rps"])
    summary["serve_ratio_to_ceiling_c8"] = _ratio(summary["serve_rps_c8"], summary["ceiling_rps_c8"])

    targets = {
        "c64_ratio_to_ceiling_min": TARGET_RATIO_C64,
        "c64_p99_ms_max": TARGET_P99_MS_C64,
        "c8_ratio_to_ceiling_min": TARGET_RATIO_C8,
    }
    met = {
        "c64_ratio_to_ceiling": summary["ratio_to_ceiling"] is not None
        and summary["ratio_to_ceiling"] >= TARGET_RATIO_C64,
        "c64_p99": summary["raygate_p99_ms"] is not None and summary["raygate_p99_ms"] < TARGET_P99_MS_C64,
        "c8_ratio_to_ceiling": summary["ratio_to_ceiling_c8"] is not None
        and summary["ratio_to_ceiling_c8"] >= TARGET_RATIO_C8,
    }
    summary["targets"] = targets
    summary["targets_detail"] = met
    summary["targets_met"] = all(met.values())
    flagged = sorted(f"{name}_c{c}" for name, rec in records.items()
                     for c, run in rec["runs"].items() if run["errors"])
    summary["errors_flagged"] = flagged
    summary["other_cpu_pct"] = {f"{name}_c{c}": run.get("other_cpu_pct") for name, rec in records.items()
                                for c, run in rec["runs"].items()}
    summary["machine_busy"] = any((v or 0) >= BUSY_CPU_PCT for v in summary["other_cpu_pct"].values())
    summary["failed"] = sorted(name for name, rec in records.items() if not rec["ok"])
    summary["failures"] = {name: rec.get("error") for name, rec in records.items() if rec.get("error")}
    summary["startup_s"] = {name: rec.get("startup_s") for name, rec in records.items()}
    summary["systems"] = list(records)
    summary["duration_s"] = args.duration
    summary["warmup_s"] = args.warmup
    summary["wrk"] = f"wrk -t{WRK_THREADS} -c{{8,64}} -d{args.duration}s --timeout {WRK_TIMEOUT} --latency " \
                     f"-s bench/post.lua"
    summary["serve_env"] = "both Serve runs: RAY_worker_niceness=0 (raygate serves at 0 too), loopback"
    try:
        import importlib.util

        spec = importlib.util.spec_from_file_location("_serve_app", BENCH / "_serve_app.py")
        _serve_app = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_serve_app)
        summary["serve_tuned_settings"] = {"env": _serve_app.TUNED_ENV, "options": _serve_app.TUNED_OPTIONS,
                                           "num_replicas": _serve_app.NUM_REPLICAS}
    except Exception:  # noqa: BLE001
        pass
    summary["machine"] = {"nproc": os.cpu_count(), "platform": platform.platform(), "loadavg": loads}
    summary["versions"] = versions()
    return summary


def _default_gateways() -> int | None:
    """The gateway processes the shipped default ("auto") starts on this machine."""
    try:
        from gateway.config import GatewayConfig, resolve_gateway_count

        return resolve_gateway_count(GatewayConfig().num_gateways, os.cpu_count() or 1)
    except ImportError:  # an older tree without "auto"
        return None


def versions() -> dict:
    out = {"python": platform.python_version()}
    for module in ("ray", "aiohttp", "uvloop", "orjson"):
        try:
            out[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001
            out[module] = None
    try:
        line = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
        out["wrk"] = line.split()[1] if line.startswith("wrk") else line
    except Exception:  # noqa: BLE001
        out["wrk"] = None
    return out


def print_table(records: dict, summary: dict) -> None:
    header = (f"{'system':<24}{'conns':>6}{'req/s':>11}{'p50 ms':>10}{'p99 ms':>10}{'x ceiling':>11}{'errors':>8}"
              f"{'other CPU%':>12}{'gw CPU us/req':>15}")
    print()
    print(header)
    print("-" * len(header))
    busiest = 0.0
    for name, rec in records.items():
        if not rec["runs"]:
            print(f"{name:<24}{'':>6}  FAILED: {rec.get('error', '')[:60]}")
            continue
        for connections in CONNECTIONS:
            run = rec["runs"].get(connections)
            if run is None:
                print(f"{name:<24}{connections:>6}  (not run)")
                continue
            ceiling = records.get("ceiling", {}).get("runs", {}).get(connections)
            ratio = _ratio(run["rps"], ceiling["rps"]) if ceiling else None
            errors = str(run["errors"]) + (" !" if run["errors"] else "")
            cpu = run.get("gateway_cpu_us_per_request")
            print(f"{name:<24}{connections:>6}{run['rps']:>11.1f}{run['p50_ms']:>10.2f}{run['p99_ms']:>10.2f}"
                  f"{(f'{ratio:.3f}' if ratio is not None else '-'):>11}{errors:>8}{run['other_cpu_pct']:>12.0f}"
                  f"{(f'{cpu:.1f}' if cpu is not None else '-'):>15}")
            busiest = max(busiest, run["other_cpu_pct"])
    print()

    def show(value, fmt="{:.3f}"):
        return fmt.format(value) if value is not None else "n/a"

    serve_note = f"(Serve figures: the {summary['serve_config']} configuration, the better at 64)" \
        if summary["serve_config"] else "(no Serve figures)"

    print(f"raygate / ceiling:  {show(summary['ratio_to_ceiling'])} at 64 connections "
          f"(target >= {TARGET_RATIO_C64}), {show(summary['ratio_to_ceiling_c8'])} at 8 (target >= {TARGET_RATIO_C8})")
    print(f"raygate p99 at 64:  {show(summary['raygate_p99_ms'], '{:.2f}')} ms (target < {TARGET_P99_MS_C64} ms)")
    print(f"raygate / Serve:    {show(summary['ratio_to_serve'], '{:.1f}x')} at 64 connections, "
          f"{show(summary['ratio_to_serve_c8'], '{:.1f}x')} at 8 {serve_note}")
    print(f"default / 1 gateway: {show(summary['default_to_1gw'])} at 64 connections, "
          f"{show(summary['default_to_1gw_c8'])} at 8 (default: {summary['default_gateways']} gateway processes)")
    for name in [n for n in records if n.startswith(BASELINE_PREFIX)]:
        ours = name[len(BASELINE_PREFIX):]
        print(f"{ours} / baseline:  req/s {show(summary.get(f'{ours}_to_baseline_rps'))} at 64 connections, "
              f"{show(summary.get(f'{ours}_to_baseline_rps_c8'))} at 8; gateway CPU per request "
              f"{show(summary.get(f'{ours}_to_baseline_gateway_cpu'))} at 64, "
              f"{show(summary.get(f'{ours}_to_baseline_gateway_cpu_c8'))} at 8 (baseline: {records[name]['tree']})")
    print(f"targets met:        {summary['targets_met']} {summary['targets_detail']}")
    if summary["errors_flagged"]:
        print(f"RUNS WITH ERRORS:   {', '.join(summary['errors_flagged'])} (socket errors or non-2xx answers)")
    if busiest >= BUSY_CPU_PCT:
        print(f"WARNING:            other processes used up to {busiest:.0f}% CPU (of {100 * (os.cpu_count() or 1)}%) "
              f"during the runs ('other CPU%'): those figures understate what this machine does when idle")
    if summary["failed"]:
        print(f"FAILED SYSTEMS:     {', '.join(summary['failed'])}")
    print(f"machine: {summary['machine']['nproc']} CPUs, load averages {summary['machine']['loadavg']}; "
          f"{summary['serve_env']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run (default 15)")
    parser.add_argument("--quick", action="store_true", help="5 s runs, 1 s warm-up")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of wrk warm-up per system (default 2)")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, wrk outputs)")
    parser.add_argument("--baseline-tree", type=Path, default=None,
                        help="another checkout (e.g. `git worktree add /tmp/gw-base 98d65a8`): each raygate system "
                        "is also run from it, just before this tree's, as baseline_<system>")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 5, 1
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown systems {unknown}; choose from {SYSTEMS}")
    if args.baseline_tree is not None:
        if not (args.baseline_tree / "bench" / "_raygate_server.py").is_file():
            parser.error(f"{args.baseline_tree} is not a checkout with bench/_raygate_server.py")
        systems = [x for name in systems for x in ((BASELINE_PREFIX + name, name) if name.startswith("raygate")
                                                   else (name,))]
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian/Ubuntu: sudo apt-get install wrk)")

    body = request_body()
    want = expected_y(body)
    work = Path(tempfile.mkdtemp(prefix="rgbgw-", dir="/tmp"))  # short: Ray's socket paths must stay < 108 bytes
    print(f"gateway benchmark: {', '.join(systems)}; wrk {args.duration} s runs at {CONNECTIONS} connections; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; work dir {work}", flush=True)

    def log(message: str) -> None:
        print(message, flush=True)

    records: dict = {}
    loads = {"start": [round(x, 2) for x in os.getloadavg()]}
    try:
        for name in systems:
            loads[f"before_{name}"] = [round(x, 2) for x in os.getloadavg()]
            tree = args.baseline_tree.resolve() if name.startswith(BASELINE_PREFIX) else ROOT
            records[name] = bench_system(name, work, args.duration, args.warmup, body, want, log, tree)
    finally:
        loads["end"] = [round(x, 2) for x in os.getloadavg()]
        failed = any(not rec["ok"] for rec in records.values()) or len(records) < len(systems)
        if args.keep or failed:
            print(f"logs and wrk outputs kept in {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)

    summary = summarise(records, args, loads)
    print_table(records, summary)
    print(json.dumps(summary, separators=(",", ":")), flush=True)
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
