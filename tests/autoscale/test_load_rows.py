"""The rows every reporter sends the scaler (replicas/load_report.py): a replica's CPU share and in-flight count,
a deployment handle's edge rows, the rows sent at once for held requests, and the sending loop. No Ray."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future

from autoscale.window import MetricReport, MetricWindow
from replicas.context import ReplicaContext
from replicas.handle import _load_for, handle_rows
from replicas.load_report import LoadReporter, ProcessCpu, replica_row, report_loop


class Clocks:
    def __init__(self) -> None:
        self.wall, self.cpu = 0.0, 0.0


def test_process_cpu_is_a_share_of_the_reserved_cpus_clamped_to_one():
    """0.5 CPU-s over 1 s is 0.5 of one CPU, 1.0 of a half CPU (clamped), and 0 CPUs count as one."""
    clocks = Clocks()
    one = ProcessCpu(1.0, cpu_clock=lambda: clocks.cpu, clock=lambda: clocks.wall)
    half = ProcessCpu(0.25, cpu_clock=lambda: clocks.cpu, clock=lambda: clocks.wall)
    none = ProcessCpu(0.0, cpu_clock=lambda: clocks.cpu, clock=lambda: clocks.wall)
    clocks.wall, clocks.cpu = 1.0, 0.5
    assert (one.read(), half.read(), none.read()) == (0.5, 1.0, 0.5)
    assert one.read() is None  # no time passed since the last read
    clocks.wall = 3.0
    assert one.read() == 0.0  # idle for two seconds


def test_a_replica_row_is_accepted_by_the_scaler_and_its_cpu_reaches_the_window():
    """The scaler parses the row as it is; merged with an edge row of the same second, the sample carries the
    replicas' mean CPU and the larger in-flight figure."""
    key = ("app", "dep", "v1")
    rows = [replica_row(key, "app.dep.v1#1", 50, 3, 0.4), replica_row(key, "app.dep.v1#2", 50, 1, 0.8)]
    edge = LoadReporter("gateway-0-1")
    edge.observe(*key, 200, 0.01)
    rows += edge.rows(50, {key: (2.0, 0.0)})
    window = MetricWindow(60)
    window.add_many(MetricReport.from_dict(row) for row in rows)
    sample = window.sample(key, 50)
    assert abs(sample.cpu - 0.6) < 1e-9 and sample.in_flight == 4.0 and sample.arrivals == 1.0
    assert sample.reporters == 3


def test_held_rows_have_their_own_reporter_and_drain_nothing():
    """Rows for held demand carry `<reporter>:held`, only for the versions named, and leave the regular row of
    the same second (with its completions) intact."""
    reporter = LoadReporter("gateway-0-1")
    reporter.observe("app", "dep", "v2", 200, 0.01)
    load = {("app", "dep", "v1"): (0.0, 4.0), ("app", "dep", "v2"): (1.0, 0.0)}
    held = reporter.held_rows(9, load, {("app", "dep", "v1"), ("app", "dep", "gone")})
    assert [(r["reporter"], r["version"], r["queued"], r["in_flight"]) for r in held] == [
        ("gateway-0-1:held", "v1", 4.0, 4.0)]
    MetricReport.from_dict(held[0])
    regular = {r["version"]: r for r in reporter.rows(9, load)}
    assert regular["v2"]["completions"] == 1 and regular["v1"]["queued"] == 4.0


class _Router:
    def load_by_version(self):
        return {("app", "back", "v1"): (2.0, 1.0), ("other", "x", "v1"): (5.0, 0.0)}


def test_handle_rows_cover_the_deployments_called_with_the_routers_load():
    """Nothing before a call; then edge rows (the gateway's format) for the called deployment's versions only,
    with what the handle saw answered and the router's in-flight and queued now."""
    context = ReplicaContext(app="app", deployment="front", version="v1", replica_id="app.front.v1#1",
                             loop=None, controller_name="c", namespace="n", scaler_name="raygate-scaler")
    router = Future()
    router.set_result(_Router())
    context._router = router
    assert handle_rows(context, 5) == []
    load = _load_for(context)
    load.called.add(("app", "back"))
    load.reporter.observe("app", "back", "v1", 500, 0.2)
    rows = handle_rows(context, 5)
    assert [(r["reporter"], r["version"], r["errors"], r["in_flight"], r["queued"]) for r in rows] == [
        ("handle@app.front.v1#1", "v1", 1, 3.0, 1.0)]
    MetricReport.from_dict(rows[0])


async def test_report_loop_sends_each_round_and_held_rows_at_once_when_woken():
    """Rows of the last whole second go to the scaler each period; a wake sends the wake rows without waiting
    for the period; a failing scaler is looked up again."""
    sent: list[list[dict]] = []

    class Scaler:
        class report:
            @staticmethod
            def remote(rows):
                sent.append(rows)
                future = asyncio.get_running_loop().create_future()
                future.set_result(len(rows))
                return future

    wake = asyncio.Event()
    task = asyncio.create_task(report_loop(
        [lambda second: [{"second": second, "kind": "regular"}]], "s", "n", period_s=30.0, wall_clock=lambda: 101.5,
        wake=wake, wake_rows=lambda second: [{"second": second, "kind": "held"}],
        find_scaler=lambda name, namespace: Scaler()))
    await asyncio.sleep(0)
    wake.set()
    for _ in range(100):
        if sent:
            break
        await asyncio.sleep(0)
    task.cancel()
    assert sent == [[{"second": 100, "kind": "held"}]]


async def test_report_loop_sends_the_last_whole_second_each_period_and_skips_empty_rounds():
    """Without a wake: each period the sources' rows for the last whole second; a round with no rows sends
    nothing (a replica that is not autoscaled and never called a handle costs no Ray call)."""
    sent: list[list[dict]] = []
    rounds = [0]

    class Scaler:
        class report:
            @staticmethod
            def remote(rows):
                sent.append(rows)
                future = asyncio.get_running_loop().create_future()
                future.set_result(len(rows))
                return future

    def source(second):
        rounds[0] += 1
        return [] if rounds[0] == 1 else [{"second": second}]

    task = asyncio.create_task(report_loop([source], "s", "n", period_s=0.001, wall_clock=lambda: 42.9,
                                           find_scaler=lambda name, namespace: Scaler()))
    for _ in range(1000):
        if len(sent) >= 2:
            break
        await asyncio.sleep(0.001)
    task.cancel()
    assert rounds[0] >= 3 and sent[:2] == [[{"second": 41}], [{"second": 41}]]
