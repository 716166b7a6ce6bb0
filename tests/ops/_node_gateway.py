"""Helper process of test_multinode: connects to the cluster as a driver, prints the node ids by role, and
with `--gateway PORT` starts one more gateway pinned to the worker node (the controller places its gateways
without regard to nodes today; see docs/operations.md, "A gateway per node")."""

from __future__ import annotations

import json
import os
import sys

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


def main() -> None:
    ray.init(address=os.environ["RAY_ADDRESS"], namespace="raygate", configure_logging=False, log_to_driver=False)
    nodes = {("worker" if "worker" in n["Resources"] else "head"): n["NodeID"] for n in ray.nodes() if n["Alive"]}
    if "--gateway" in sys.argv:
        from gateway.actor import Gateway
        from gateway.config import GatewayConfig

        port = int(sys.argv[sys.argv.index("--gateway") + 1])
        config = GatewayConfig(port=port, num_gateways=1, admin_token=os.environ["RAYGATE_ADMIN_TOKEN"],
                               access_log=False)
        gateway = ray.remote(Gateway).options(
            name="raygate-gateway-worker-node", lifetime="detached", max_restarts=0, max_concurrency=8, num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(nodes["worker"], soft=False)).remote(config, 99)
        nodes["gateway"] = ray.get(gateway.ready.remote(), timeout=120)
    print(json.dumps(nodes), flush=True)


if __name__ == "__main__":
    main()
