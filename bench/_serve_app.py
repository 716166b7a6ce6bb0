"""Ray Serve for bench/gateway.py: the quickstart's Linear model as a Serve deployment with 2 replicas at /linear.

A fresh local Ray on loopback (address="local", no dashboard), Serve's HTTP proxy on 127.0.0.1:<port>.
`--mode default` leaves Serve's settings alone; `--mode tuned` applies the knobs in TUNED_ENV / TUNED_OPTIONS.
Both modes run Ray workers at niceness 0 (RAY_worker_niceness=0), the niceness raygate serves at, so the
comparison is fair (Ray's own default is 15). Started by bench/gateway.py as its own process (session leader,
so Ray's processes share its process group); prints `READY <url>` once POST /linear answers 200; on SIGTERM it
shuts Serve and Ray down.

    python bench/_serve_app.py --mode tuned --port 8123 --work-dir /tmp/rgb-x/st
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# bench/gateway.py would shadow the `gateway` package (and Ray workers inherit the driver's sys.path): drop bench/.
sys.path[:] = [ROOT] + [p for p in sys.path if os.path.abspath(p or ".") not in (ROOT, os.path.dirname(
    os.path.abspath(__file__)))]

from bench._ready import wait_answering  # noqa: E402  (after the sys.path fix above)

# Environment for both modes: loopback only, workers at normal priority (what raygate's start_local_ray sets).
BASE_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_worker_niceness": "0"}
# Serve knobs for the tuned run (set before ray.init so the controller, proxy and replicas inherit them).
TUNED_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",  # user code on the replica's own event loop
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",  # the proxy's router on the proxy's event loop
    "RAY_SERVE_LOG_TO_STDERR": "0",  # Serve logs to its files only
}
TUNED_OPTIONS = {
    "max_ongoing_requests": 128,  # default 5: 64 connections over 2 replicas queue in the proxy otherwise
    "logging_config": {"enable_access_log": False},
}
NUM_REPLICAS = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("default", "tuned"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--work-dir", required=True, help="short directory for Ray's temp dir")
    args = parser.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    os.environ.update(BASE_ENV)
    if args.mode == "tuned":
        os.environ.update(TUNED_ENV)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p)

    import ray
    from ray import serve

    from deploy.examples.models import Linear

    @serve.deployment(num_replicas=NUM_REPLICAS)
    class LinearDeployment:
        def __init__(self) -> None:
            self.model = Linear()

        async def __call__(self, request):
            return self.model(await request.json())

    temp_dir = os.path.join(args.work_dir, "r")
    os.makedirs(temp_dir, exist_ok=True)
    try:
        ray.init(address="local", namespace="serve-bench", include_dashboard=False, _node_ip_address="127.0.0.1",
                 _temp_dir=temp_dir, log_to_driver=False, configure_logging=False)
        signal.signal(signal.SIGTERM, lambda *_: stop.set())  # in case ray.init installed its own
        start_kwargs = {"http_options": {"host": "127.0.0.1", "port": args.port}}
        deployment = LinearDeployment
        if args.mode == "tuned":
            start_kwargs["logging_config"] = {"enable_access_log": False}
            deployment = LinearDeployment.options(**TUNED_OPTIONS)
        serve.start(**start_kwargs)
        serve.run(deployment.bind(), name="linear", route_prefix="/linear")
        url = f"http://127.0.0.1:{args.port}/linear"
        wait_answering(url, 120)
        print(f"READY {url}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        if ray.is_initialized():
            try:
                serve.shutdown()
            except Exception as exc:  # noqa: BLE001 - keep tearing down
                print(f"serve.shutdown failed: {exc!r}", flush=True)
            ray.shutdown()
        print("STOPPED", flush=True)


if __name__ == "__main__":
    main()
