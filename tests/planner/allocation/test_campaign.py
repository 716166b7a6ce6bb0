"""The bench's baselines: DMD as a user would run it, its request count from the loop's forecast."""

from __future__ import annotations

import numpy as np
import pytest

from planner.allocation.campaign import (
    arrival_times,
    history_counts,
    replay_baseline,
    replay_dmd_forecast,
    scenario_from_instance,
)
from planner.generate import GeneratorConfig, generate_instance


@pytest.fixture(scope="module")
def instance():
    return generate_instance(GeneratorConfig(n=3000, J=4, K=6, seed=2, tightness=(0.2, 0.5)))


def test_dmd_re_paced_on_the_forecast_gains_from_a_right_one_and_loses_from_a_wrong_one(instance):
    """Flat arrivals, no margin: with a history of today's count the forecast is right, and DMD re-paced on it every
    cycle realises at least 99% of what DMD told the true count does (re-pacing what remains can only help); with a
    history at a third of today's count or three times it, the forecast is wrong until its level catches up, and
    DMD realises less than on the right one. Nothing overspends."""
    sc = scenario_from_instance(instance, horizon_s=100.0, cycle_s=5.0, season_s=100.0, season_buckets=20,
                                starts_at=0.0, forecast_margin=0.0)
    times = arrival_times(instance.n, 100.0, shape="flat")
    scale = float(np.mean(np.where(instance.mask, instance.c, 0).max(axis=1)))
    told, _ = replay_baseline(instance, np.arange(instance.n), "dmd", 0.01, scale)

    def repaced(history_level: float) -> float:
        history = history_counts(sc, 0.0, int(instance.n * history_level), shape="flat")
        value, use = replay_dmd_forecast(instance, times, sc, 0.01, scale, start=0.0, history=history)
        assert np.all(use <= instance.b * (1 + 1e-9))
        return value

    right = repaced(1.0)
    assert right >= 0.99 * told
    assert repaced(1 / 3) < 0.99 * right and repaced(3.0) < right
