"""The scaler actor on a real Ray and a real Redis, against a stand-in controller actor."""

import time

import pytest

pytestmark = pytest.mark.integration


def test_scaler_actor_scales_a_version_up_from_pushed_reports(ray_cluster, redis_url):
    """Reports pushed to the actor drive set_autoscale_target on the controller; status shows the decision; the
    arrival history lands in Redis."""
    import ray
    import redis

    from autoscale.actor import ScalerActor

    @ray.remote(num_cpus=0)
    class Controller:
        def __init__(self):
            self.targets = []

        def autoscaled_versions(self):
            return [{"app": "shop", "deployment": "ranker", "version": "v1", "replicas": 2, "ready": 2,
                     "starting": 0, "resources": {"num_cpus": 0.1},
                     "autoscaling": {"min_replicas": 1, "max_replicas": 6, "target_ongoing_requests": 2,
                                     "forecast_bucket_s": 1, "season_length_s": 60}}]

        def set_autoscale_target(self, app, deployment, version, target, reason):
            self.targets.append((app, deployment, version, target, reason))

        def seen(self):
            return self.targets

    controller = Controller.remote()
    scaler = ray.remote(num_cpus=0)(ScalerActor).remote(controller, redis_url=redis_url, namespace="it",
                                                       request_resources=lambda bundles: None)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            now = int(time.time())
            rows = [{"app": "shop", "deployment": "ranker", "version": "v1", "reporter": "gw", "role": "edge",
                     "second": s, "arrivals": 400, "completions": 400, "in_flight": 40.0} for s in (now - 1, now)]
            ray.get(scaler.report.remote(rows))
            targets = ray.get(controller.seen.remote())
            if targets and targets[-1][3] == 6:
                break
            time.sleep(0.5)
        assert targets[-1][:4] == ("shop", "ranker", "v1", 6)
        scale_ups = ("panic_scale_up", "scale_up", "predictive_scale_up")
        first_at_six = next(target for target in targets if target[3] == 6)
        assert first_at_six[4] in scale_ups, targets  # the change to 6 was sent as a scale-up
        # Status shows the version's latest decision: 6, from that scale-up or from a later tick that holds at 6
        # (the actor keeps ticking between the two calls above).
        decisions = ray.get(scaler.last_decisions.remote())
        assert decisions[0]["target"] == 6 and decisions[0]["reason"] in (*scale_ups, "panic_hold", "hold")
        time.sleep(3)  # completed one-second buckets reach Redis
        assert redis.Redis.from_url(redis_url).xlen("it:autoscale:arrivals:shop/ranker/v1") > 0
    finally:
        ray.get(scaler.stop.remote())
