"""Online allocation: scenarios, the per-request decision, budget leases, calibration, the nearline loop and the
allocator deployment's code. Importing the package starts nothing and reads no environment."""

from planner.allocation.scenario import ConstraintSpec, ScenarioSpec

__all__ = ["ConstraintSpec", "ScenarioSpec"]
