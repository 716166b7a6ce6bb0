"""One system under chaos for bench/chaos.py: start raygate or Ray Serve, run the faults, write what happened.

Started by bench/chaos.py as its own process (a session leader, so the Ray processes it starts share its process
group and the parent can clean up after it). It starts the system (raygate: embedded Redis + a fresh local Ray on
loopback + the Platform, the quickstart's gateway processes on one port and a spare; Serve: a fresh local Ray on loopback + serve.start),
serving `deploy.examples.models:Stallable` with 3 replicas at /chaos (raygate also serves the quickstart app as
shipped, deploy/examples/quickstart.yaml: one replica per version at /linear, for `frozen_single`, and runs as many
gateway processes as the quickstart's spec asks for), then for each (fault, rate) of the plan:

  1. waits until the system is whole (3 RUNNING replicas, every gateway/proxy answering),
  2. starts bench/_chaos_load.py (fixed rate, open loop) for steady_s + post_s seconds,
  3. injects the fault steady_s after the load started, records its wall-clock time,
  4. polls the system's own view (controller status, gateway ejections, actor states) to time ejection and
     restoration, for up to eject_cap_s after the fault,
  5. undoes the fault (SIGCONT, removes the stall flag), waits for the load to finish and the system to be whole.

Raw load samples go to <out-dir>/load-<system>-<fault>-<rate>.json, one record per scenario to
<out-dir>/<system>.json (rewritten after each scenario). Prints `READY <url>` once serving, `DONE` at the end.

    python bench/_chaos_system.py --system raygate --port 8123 --work-dir /tmp/rgc-x/rg --out-dir /tmp/rgc-x \
        --plan '[{"fault": "sigkill", "rate": 100}]'
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.dirname(os.path.abspath(__file__))
# bench/gateway.py would shadow the `gateway` package (and Ray workers inherit the driver's sys.path): drop bench/.
sys.path[:] = [ROOT] + [p for p in sys.path if os.path.abspath(p or ".") not in (ROOT, BENCH)]

import argparse  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

from bench._ready import wait_answering  # noqa: E402  (after the sys.path fix above)

APP = "chaos"
DEPLOYMENT = "chaos"
NUM_REPLICAS = 3
REQUEST_TIMEOUT_S = 10.0
MAX_ONGOING = 64
STALL_S = 5.0
NUM_CPUS = 0.1
NUM_GATEWAYS = 2  # Serve's comparison setup; raygate takes the quickstart spec's gateway count
QUICKSTART = "quickstart"  # the quickstart app as shipped: frozen_single freezes its v1 replica
QUICKSTART_REPLICAS = 2  # one per version
USED_VICTIMS: set = set()  # replica pids already hurt in an earlier scenario


class Stop(Exception):
    """SIGTERM/SIGINT from the parent."""


def _on_signal(*_):
    raise Stop()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
        return text[text.rfind(")") + 2:].split()[0] != "Z"
    except OSError:
        return False


# ------------------------------------------------------------------------------------------------------ raygate

class Raygate:
    name = "raygate"

    def __init__(self, port: int, work: str, flag_dir: str) -> None:
        self.port, self.work, self.flag_dir = port, work, flag_dir
        self.redis = self.platform = None
        self.url = f"http://127.0.0.1:{port}/{APP}"
        self.bias = 0.0

    def quickstart(self) -> dict:
        import yaml

        with open(os.path.join(ROOT, "deploy", "examples", "quickstart.yaml")) as f:
            return yaml.safe_load(f)

    def num_gateways(self) -> int | str:
        """The quickstart spec's gateway setting ("auto": the controller resolves it per node)."""
        from deploy.spec import parse_spec

        return parse_spec(self.quickstart()).gateway.num_gateways

    def spec(self, bias: float):
        from deploy.spec import parse_spec

        return parse_spec({"apps": self.quickstart()["apps"] + [{
            "name": APP, "route_prefix": f"/{APP}", "ingress": DEPLOYMENT,
            "deployments": [{
                "name": DEPLOYMENT, "import_path": "deploy.examples.models:Stallable",
                "init_kwargs": {"flag_dir": self.flag_dir, "stall_s": STALL_S, "bias": bias},
                "num_replicas": NUM_REPLICAS, "idempotent": True, "request_timeout_s": REQUEST_TIMEOUT_S,
                "max_ongoing_requests": MAX_ONGOING, "resources": {"num_cpus": NUM_CPUS},
            }]}]})

    def start(self) -> None:
        from deploy.controller import ControllerConfig
        from deploy.embedded import EmbeddedRedis, free_port, start_local_ray
        from deploy.platform import Platform
        from gateway.config import GatewayConfig

        self.redis = EmbeddedRedis(data_dir=os.path.join(self.work, "redis"), port=free_port()).start()
        print(f"PID {self.redis.process.pid}", flush=True)
        start_local_ray(temp_dir=os.path.join(self.work, "r"), log_to_driver=False)
        signal.signal(signal.SIGTERM, _on_signal)  # in case ray.init installed its own
        metrics_dir, log_dir = os.path.join(self.work, "metrics"), os.path.join(self.work, "logs")
        os.makedirs(metrics_dir, exist_ok=True)
        os.makedirs(log_dir, exist_ok=True)
        gateway = GatewayConfig(port=self.port, num_gateways=self.num_gateways(),
                                admin_token="chaos-" + os.urandom(8).hex(), metrics_dir=metrics_dir, log_dir=log_dir)
        self.platform = Platform(ControllerConfig(redis_url=self.redis.url, gateway=gateway)).start()
        self.gateways = len(self.platform.gateways())  # serving processes (spares not counted)
        print(f"GATEWAYS {self.gateways}", flush=True)
        self.platform.apply(self.spec(self.bias))
        wait_answering(self.url, 60)
        wait_answering(self.url_for(QUICKSTART), 60)

    def url_for(self, app: str) -> str:
        return f"http://127.0.0.1:{self.port}/linear" if app == QUICKSTART else self.url

    def stop(self) -> None:
        import ray

        if self.platform is not None:
            try:
                self.platform.stop()
            except Exception as exc:  # noqa: BLE001 - keep tearing down
                log(f"platform.stop failed: {exc!r}")
        if ray.is_initialized():
            ray.shutdown()
        if self.redis is not None:
            self.redis.stop()

    # --- the system's own view
    def snapshot(self, app_name: str = APP) -> dict:
        """{"running": {pid: replica_id}, "all": {pid: state}, "rolling": bool} of one app, from the controller."""
        status = self.platform.status()
        running, every, rolling, count = {}, {}, False, 0
        for app in status["apps"]:
            if app["name"] != app_name:
                continue
            for dep in app["deployments"]:
                for version in dep["versions"]:
                    rolling = rolling or version["rolling"]
                    count += version["running"]
                    for r in version["replicas"]:
                        every[r["pid"]] = r["state"]
                        if r["state"] == "RUNNING":
                            running[r["pid"]] = r["replica_id"]
        return {"running": running, "all": every, "rolling": rolling, "count": len(running)}

    def gateway_stats(self, timeout_s: float = 2.0) -> list[dict]:
        import ray

        refs = [g.stats.remote() for g in self.platform.gateways()]  # all at once: one wait, not one per gateway
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        out = []
        for ref in ready:
            try:
                out.append(ray.get(ref))
            except Exception:  # noqa: BLE001 - a dead or restarting gateway does not answer
                pass
        return out

    def gateway_pids(self) -> list[int]:
        return sorted(s["pid"] for s in self.gateway_stats(1.0))

    def whole(self) -> bool:
        snap, quick = self.snapshot(), self.snapshot(QUICKSTART)
        return (snap["count"] == NUM_REPLICAS and not snap["rolling"] and quick["count"] == QUICKSTART_REPLICAS
                and len(self.gateway_pids()) == self.gateways)

    def ejections(self, replica_id: str, since: float) -> list[dict]:
        found = []
        for s in self.gateway_stats():
            found += [dict(e, gateway_pid=s["pid"]) for e in s["ejections"]
                      if e["replica_id"] == replica_id and e["at"] >= since]
        return sorted(found, key=lambda e: e["at"])

    def roll(self) -> None:
        self.bias = round(self.bias + 0.001, 6)
        self.platform.apply(self.spec(self.bias))

    def proxy_victim(self) -> int:
        return self.gateway_pids()[0]


# ------------------------------------------------------------------------------------------------------- Serve

class Serve:
    name = "serve"

    def __init__(self, port: int, work: str, flag_dir: str) -> None:
        self.port, self.work, self.flag_dir = port, work, flag_dir
        self.url = f"http://127.0.0.1:{port}/{APP}"
        self.bias = 0.0
        self.deployment = None

    def app(self, bias: float):
        return self.deployment.bind(self.flag_dir, STALL_S, bias)

    def start(self) -> None:
        os.environ.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_worker_niceness": "0"})
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p)
        import asyncio
        from concurrent.futures import ThreadPoolExecutor

        import ray
        from ray import serve

        @serve.deployment(name=DEPLOYMENT, num_replicas=NUM_REPLICAS, max_ongoing_requests=MAX_ONGOING,
                          ray_actor_options={"num_cpus": NUM_CPUS})
        class ChaosModel:
            """Stallable (sync, like raygate's sync callables) on a 32-thread pool, as raygate's replicas run it."""

            def __init__(self, flag_dir: str, stall_s: float, bias: float) -> None:
                from deploy.examples.models import Stallable

                self.model = Stallable(flag_dir, stall_s=stall_s, bias=bias)
                self.pool = ThreadPoolExecutor(max_workers=32)

            async def __call__(self, request):
                payload = await request.json()
                return await asyncio.get_running_loop().run_in_executor(self.pool, self.model, payload)

        self.deployment = ChaosModel
        temp_dir = os.path.join(self.work, "r")
        os.makedirs(temp_dir, exist_ok=True)
        ray.init(address="local", namespace="serve-chaos", include_dashboard=False, _node_ip_address="127.0.0.1",
                 _temp_dir=temp_dir, log_to_driver=False, configure_logging=False)
        signal.signal(signal.SIGTERM, _on_signal)
        serve.start(http_options={"host": "127.0.0.1", "port": self.port, "request_timeout_s": REQUEST_TIMEOUT_S})
        serve.run(self.app(self.bias), name=APP, route_prefix=f"/{APP}")
        wait_answering(self.url, 120)
        self._check_names()

    def stop(self) -> None:
        import ray
        from ray import serve

        if ray.is_initialized():
            try:
                serve.shutdown()
            except Exception as exc:  # noqa: BLE001 - keep tearing down
                log(f"serve.shutdown failed: {exc!r}")
            ray.shutdown()

    def _alive(self, class_name: str) -> list[int]:
        """Pids of ALIVE actors of that class, from the GCS actor table (no dashboard here for the state API)."""
        from ray._private import state

        actors = state.actors(actor_state_name="ALIVE")
        return sorted(int(a["Pid"]) for a in actors.values()
                      if a.get("ActorClassName") == class_name and a.get("Pid"))

    def _check_names(self) -> None:
        from ray._private import state

        if len(self._alive(f"ServeReplica:{APP}:{DEPLOYMENT}")) != NUM_REPLICAS or not self.proxy_pids():
            names = sorted({a.get("ActorClassName") for a in state.actors(actor_state_name="ALIVE").values()})
            raise RuntimeError(f"Serve's replica/proxy actors not found by class name; alive classes: {names}")

    def url_for(self, app: str) -> str:
        return self.url  # Serve runs the chaos app only (no frozen_single)

    def snapshot(self, app_name: str = APP) -> dict:
        from ray import serve

        status = serve.status()
        states: dict = {}
        rolling = False
        app = status.applications.get(APP)
        if app is not None:
            dep = app.deployments.get(DEPLOYMENT)
            if dep is not None:
                states = {str(getattr(k, "value", k)): v for k, v in dep.replica_states.items()}
                rolling = str(getattr(dep.status, "value", dep.status)) != "HEALTHY"
            rolling = rolling or str(getattr(app.status, "value", app.status)) != "RUNNING"
        pids = self._alive(f"ServeReplica:{APP}:{DEPLOYMENT}")
        count = states.get("RUNNING", 0)
        return {"running": {pid: str(pid) for pid in pids}, "all": states, "rolling": rolling, "count": count,
                "states": states}

    def proxy_pids(self) -> list[int]:
        return self._alive("ProxyActor")

    def proxies_healthy(self) -> bool:
        from ray import serve

        proxies = serve.status().proxies
        return bool(proxies) and all(str(getattr(v, "value", v)) == "HEALTHY" for v in proxies.values())

    def whole(self) -> bool:
        snap = self.snapshot()
        return (snap["count"] == NUM_REPLICAS and not snap["rolling"] and len(snap["running"]) == NUM_REPLICAS
                and len(self.proxy_pids()) == 1 and self.proxies_healthy())

    def roll(self) -> None:
        from ray import serve

        self.bias = round(self.bias + 0.001, 6)
        serve.run(self.app(self.bias), name=APP, route_prefix=f"/{APP}")

    def proxy_victim(self) -> int:
        return self.proxy_pids()[0]


# ---------------------------------------------------------------------------------------------------- scenarios

def wait_whole(system, timeout_s: float) -> float | None:
    """Seconds it took the system to be whole, or None if it was not within timeout_s."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            if system.whole():
                return time.monotonic() - t0
        except Stop:
            raise
        except Exception:  # noqa: BLE001 - e.g. a status call during a restart
            pass
        time.sleep(0.25)
    return None


def _cpu_ticks() -> dict[int, tuple[int, int, int]]:
    """pid -> (pgrp, session, utime+stime ticks) for every live process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()
        out[int(entry)] = (int(fields[2]), int(fields[3]), int(fields[11]) + int(fields[12]))
    return out


def foreign_cpu_pct(before: dict, after: dict, ours: set[int], wall_s: float) -> float:
    """CPU% (100 = one core) used meanwhile by processes that are not this benchmark's: not in this process's
    group or session (Ray's processes and the load generator are), nor one of `ours` (Redis). A lower bound:
    processes that exited meanwhile are missed."""
    me_group, me_session = os.getpgrp(), os.getsid(0)
    ticks = 0
    for pid, (pgrp, sid, used) in after.items():
        if pgrp in (me_group, me_session) or sid in (me_group, me_session) or pid in ours:
            continue
        ticks += used - (before[pid][2] if pid in before else 0)
    return round(100.0 * ticks / os.sysconf("SC_CLK_TCK") / wall_s, 1)


def start_load(url: str, rate: float, duration_s: float, start_at: float, out: str, timeout_s: float):
    cmd = [sys.executable, os.path.join(BENCH, "_chaos_load.py"), "--url", url, "--rate", str(rate),
           "--duration", str(duration_s), "--start-at", f"{start_at:.6f}", "--out", out, "--timeout", str(timeout_s)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def run_scenario(system, fault: str, rate: float, cfg: dict, out_dir: str, flag_dir: str) -> dict:
    rec: dict = {"system": system.name, "fault": fault, "rate": rate, "notes": [], "ok": False}
    app = QUICKSTART if fault == "frozen_single" else APP
    replicas = QUICKSTART_REPLICAS if app == QUICKSTART else NUM_REPLICAS
    url = system.url_for(app)
    rec["app"] = app
    steady_s, post_s = cfg["steady_s"], cfg["post_s"]
    cap_s = cfg["eject_cap_s"]
    poll_s = 0.1 if system.name == "raygate" else 0.2
    took = wait_whole(system, cfg["whole_timeout_s"])
    if took is None:
        rec["notes"].append(f"system not whole {cfg['whole_timeout_s']:.0f}s before the fault; ran it anyway")
    rec["loadavg_before"] = [round(x, 2) for x in os.getloadavg()]
    before = system.snapshot(app)
    load_file = os.path.join(out_dir, f"load-{system.name}-{fault}-{int(rate)}.json")
    start_at = time.time() + 1.5
    ticks_before, ticks_t0 = _cpu_ticks(), time.monotonic()
    load = start_load(url, rate, steady_s + post_s, start_at, load_file, cfg["client_timeout_s"])
    rec.update(load_file=load_file, steady_s=steady_s, post_s=post_s, load_start=start_at)
    fault_due = start_at + steady_s
    # victim chosen before the fault
    victim_pid = victim_id = None
    if fault == "frozen_single":  # v1, the version with 90% of the traffic
        victim_pid = next(pid for pid, rid in before["running"].items() if ".v1#" in rid)
        victim_id = before["running"][victim_pid]
    elif fault in ("sigkill", "sigstop", "half_alive"):
        fresh = [pid for pid in sorted(before["running"]) if pid not in USED_VICTIMS]  # not one hurt before
        victim_pid = (fresh or sorted(before["running"]))[0]
        USED_VICTIMS.add(victim_pid)
        victim_id = before["running"][victim_pid]
    elif fault == "gateway_kill":
        victim_pid = system.proxy_victim()
        victim_id = f"{'gateway' if system.name == 'raygate' else 'proxy'}-{victim_pid}"
    rec.update(victim_pid=victim_pid, victim_id=victim_id, pids_before=sorted(before["running"]))
    gateways_before = set(system.gateway_pids()) if fault == "gateway_kill" and system.name == "raygate" else set()
    while time.time() < fault_due:
        time.sleep(min(0.05, max(0.0, fault_due - time.time())))
    if load.poll() is not None:
        rec["notes"].append(f"load generator exited early: {load.stdout.read()[-500:]}")
    roller = None
    roll_error: list = []
    flag = os.path.join(flag_dir, f"stall-{victim_pid}") if fault == "half_alive" else None
    t_fault = time.time()
    if fault == "sigkill" or fault == "gateway_kill":
        os.kill(victim_pid, signal.SIGKILL)
    elif fault in ("sigstop", "frozen_single"):
        os.kill(victim_pid, signal.SIGSTOP)
    elif fault == "half_alive":
        with open(flag, "w") as f:
            f.write("stall\n")
    elif fault == "rolling_update":
        def do_roll():
            try:
                system.roll()
            except Exception as exc:  # noqa: BLE001
                roll_error.append(repr(exc))

        roller = threading.Thread(target=do_roll, daemon=True)
        roller.start()
    rec["t_fault"] = t_fault
    log(f"{system.name} {fault} @ {rate:g}/s: fault injected (victim {victim_id} pid {victim_pid})")

    eject_ctl = restored = None
    old_pids = set(before["running"])
    # a hung replica stays hung until the system acts or eject_cap_s passes; other faults: wait for the restore
    deadline = t_fault + max(post_s, cap_s if fault in ("sigstop", "half_alive", "frozen_single")
                             else cfg["restore_cap_s"])
    load_end = start_at + steady_s + post_s
    timeline = []
    while time.time() < deadline:
        now = time.time()
        try:
            if fault == "gateway_kill":
                stats = system.gateway_stats(0.2) if system.name == "raygate" else []  # a dead one: 0.2 s lost
                pids = sorted(s["pid"] for s in stats) if system.name == "raygate" else system.proxy_pids()
                ok = len(pids) == (system.gateways if system.name == "raygate" else 1) and victim_pid not in pids
                if ok and system.name == "serve":
                    ok = system.proxies_healthy()
                if ok and restored is None:
                    restored = time.time()
                    rec["pids_after"] = pids
                    # the replacement's own clock: when it began listening (polling adds up to a poll's wait)
                    since = [s["serving_since"] for s in stats if s["pid"] not in gateways_before
                             and s.get("serving_since")]
                    rec["replacement_serving_s"] = round(min(since) - t_fault, 3) if since else None
            else:
                snap = system.snapshot(app)
                if not timeline or timeline[-1][1:] != [snap["count"], sorted(snap["running"])]:
                    timeline.append([round(now - t_fault, 2), snap["count"], sorted(snap["running"])])
                if fault in ("sigkill", "sigstop", "half_alive", "frozen_single"):
                    if eject_ctl is None:
                        if system.name == "raygate":
                            gone = victim_pid not in snap["running"]
                        else:  # Serve's controller no longer counts it RUNNING (or already replaced it)
                            gone = snap["count"] < NUM_REPLICAS or (
                                victim_pid not in snap["running"] and len(snap["running"]) >= NUM_REPLICAS)
                        if gone:
                            eject_ctl = now
                    if eject_ctl is not None and restored is None and snap["count"] == replicas \
                            and victim_pid not in snap["running"] and len(snap["running"]) == replicas:
                        restored = now
                        rec["pids_after"] = sorted(snap["running"])
                elif fault == "rolling_update":
                    if eject_ctl is None and not old_pids <= set(snap["running"]):
                        eject_ctl = now  # first old replica out of the running set
                    if restored is None and not roller.is_alive() and snap["count"] == NUM_REPLICAS \
                            and not snap["rolling"]:
                        restored = now
                        rec["pids_after"] = sorted(snap["running"])
        except Stop:
            raise
        except Exception as exc:  # noqa: BLE001 - a status call can fail while things restart
            rec["notes"].append(f"poll error at +{now - t_fault:.2f}s: {exc!r}"[:200])
        done_eject = eject_ctl is not None or fault in ("gateway_kill",)
        if time.time() >= load_end and restored is not None and done_eject:
            break
        if fault == "half_alive" and time.time() >= load_end and system.name == "raygate":
            break  # raygate's gateways eject it; the controller keeps it (health checks pass): nothing to wait for
        if fault == "half_alive" and time.time() >= load_end and system.name == "serve" and eject_ctl is None \
                and time.time() >= t_fault + cap_s:
            break
        time.sleep(poll_s)
    rec["monitor_end_s"] = round(time.time() - t_fault, 2)
    rec["timeline"] = timeline[:60]

    # undo
    if fault in ("sigstop", "frozen_single"):
        try:
            os.kill(victim_pid, signal.SIGCONT)
            rec["undo"] = f"SIGCONT at +{time.time() - t_fault:.1f}s"
        except ProcessLookupError:
            rec["undo"] = "victim already gone (killed by the system)"
    elif fault == "half_alive":
        try:
            os.remove(flag)
        except OSError:
            pass
        rec["undo"] = f"flag removed at +{time.time() - t_fault:.1f}s"
    if roller is not None:
        roller.join(300)
        if roll_error:
            rec["notes"].append(f"rolling update failed: {roll_error[0][:300]}")

    # the load finishes on its own (steady_s + post_s, then waits for outstanding answers)
    try:
        out, _ = load.communicate(timeout=steady_s + post_s + cfg["client_timeout_s"] + 60)
    except subprocess.TimeoutExpired:
        load.kill()
        out, _ = load.communicate()
        rec["notes"].append("load generator did not finish; killed")
    rec["load_output"] = out.strip()[-300:]
    ours = {system.redis.process.pid} if getattr(system, "redis", None) is not None else set()
    rec["other_cpu_pct"] = foreign_cpu_pct(ticks_before, _cpu_ticks(), ours, time.monotonic() - ticks_t0)
    rec["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]

    # after the fact: raygate's gateways keep their recent ejections with wall-clock times
    if system.name == "raygate" and victim_id and fault in ("sigkill", "sigstop", "half_alive", "frozen_single"):
        try:
            ej = system.ejections(victim_id, t_fault - 1.0)
            rec["gateway_ejections"] = [{"reason": e["reason"], "at_s": round(e["at"] - t_fault, 3),
                                         "for_s": e.get("for_s"), "gateway_pid": e["gateway_pid"]} for e in ej][:20]
            rec["eject_gateway_s"] = round(ej[0]["at"] - t_fault, 3) if ej else None
        except Exception as exc:  # noqa: BLE001
            rec["notes"].append(f"could not read gateway ejections: {exc!r}"[:200])
    rec["eject_controller_s"] = round(eject_ctl - t_fault, 3) if eject_ctl is not None else None
    candidates = [x for x in (rec.get("eject_gateway_s"), rec["eject_controller_s"]) if x is not None]
    rec["eject_s"] = min(candidates) if candidates else None
    rec["restored_s"] = round(restored - t_fault, 3) if restored is not None else None

    # back to whole before the next scenario
    took = wait_whole(system, cfg["whole_timeout_s"])
    rec["whole_after_s"] = round(time.time() - t_fault, 1) if took is not None else None
    if took is None:
        rec["notes"].append(f"system not whole within {cfg['whole_timeout_s']:.0f}s after the undo")
    rec["ok"] = os.path.exists(load_file)
    log(f"{system.name} {fault} @ {rate:g}/s: eject_s {rec['eject_s']}, restored_s {rec['restored_s']}, "
        f"{rec['load_output'].splitlines()[-1] if rec['load_output'] else ''}")
    return rec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", choices=("raygate", "serve"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--plan", required=True, help="JSON list of {fault, rate}")
    parser.add_argument("--config", required=True, help="JSON: steady_s, post_s, eject_cap_s, ...")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    plan, cfg = json.loads(args.plan), json.loads(args.config)
    os.makedirs(args.work_dir, exist_ok=True)
    flag_dir = os.path.join(args.work_dir, "flags")
    os.makedirs(flag_dir, exist_ok=True)
    system = (Raygate if args.system == "raygate" else Serve)(args.port, args.work_dir, flag_dir)
    results: dict = {"system": args.system, "scenarios": [], "error": None}
    out_path = os.path.join(args.out_dir, f"{args.system}.json")

    def save() -> None:
        with open(out_path + ".tmp", "w") as f:
            json.dump(results, f)
        os.replace(out_path + ".tmp", out_path)

    try:
        t0 = time.monotonic()
        system.start()
        results["startup_s"] = round(time.monotonic() - t0, 1)
        results["gateways"] = getattr(system, "gateways", NUM_GATEWAYS)
        print(f"READY {system.url}", flush=True)
        warmed: set = set()
        for item in plan:
            fault, rate = item["fault"], float(item["rate"])
            app = QUICKSTART if fault == "frozen_single" else APP
            if (app, rate) not in warmed:  # a short load at this rate first: connections, code paths, caches
                warm_file = os.path.join(args.work_dir, f"warm-{app}-{int(rate)}.json")
                w = start_load(system.url_for(app), rate, cfg["warmup_s"], time.time() + 1.0, warm_file, 15.0)
                w.communicate(timeout=cfg["warmup_s"] + 60)
                warmed.add((app, rate))
            try:
                rec = run_scenario(system, fault, rate, cfg, args.out_dir, flag_dir)
            except Stop:
                raise
            except Exception as exc:  # noqa: BLE001 - one scenario failing must not lose the others
                rec = {"system": args.system, "fault": fault, "rate": rate, "ok": False,
                       "error": "".join(traceback.format_exception_only(type(exc), exc)).strip()[:500]}
                log(f"{args.system} {fault} @ {rate:g}/s FAILED: {rec['error']}")
                traceback.print_exc()
            results["scenarios"].append(rec)
            save()
    except Stop:
        results["error"] = "stopped by a signal"
    except Exception as exc:  # noqa: BLE001
        results["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:500]
        traceback.print_exc()
    finally:
        save()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            system.stop()
        except Exception as exc:  # noqa: BLE001
            log(f"teardown failed: {exc!r}")
        print("DONE", flush=True)


if __name__ == "__main__":
    main()
