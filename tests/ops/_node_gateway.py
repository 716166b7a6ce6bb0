"""Helper process of test_multinode: connects to the cluster as a driver, prints the node ids by role, and
with `--gateway PORT` starts one gateway pinned to each node, sharing the port (SO_REUSEPORT). This stands in
for what the controller must do (it places its gateways without regard to nodes today; see
docs/operations.md, "A gateway per node")."""

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
        gateways = {role: ray.remote(Gateway).options(
            name=f"raygate-gateway-node-{role}", lifetime="detached", max_restarts=0, max_concurrency=8,
            num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(config, 90 + i)
            for i, (role, node_id) in enumerate(sorted(nodes.items()))}
        nodes["gateways"] = {role: ray.get(g.ready.remote(), timeout=120) for role, g in gateways.items()}
    print(json.dumps(nodes), flush=True)


if __name__ == "__main__":
    main()
