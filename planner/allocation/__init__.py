"""Online allocation: scenarios, the per-request decision, budget leases, calibration, the nearline loop and the
allocator deployment's code. Importing the package starts nothing, connects to nothing and reads no environment
(Ray, redis-py and statsmodels are imported where they are used)."""

from planner.allocation.actor import NearlinePlanner, planner_actor_name, start_planner
from planner.allocation.budget import BudgetLease, BudgetStore, LeaseState
from planner.allocation.calibration import Calibration
from planner.allocation.decide import ConstraintMatrix, Decision, decide, dmd_step
from planner.allocation.forecast import ArrivalForecast
from planner.allocation.nearline import CycleReport, NearlineLoop, default_solve
from planner.allocation.samples import SampleStore, samples_instance
from planner.allocation.scenario import ConstraintSpec, ScenarioSpec
from planner.allocation.service import Allocator
from planner.allocation.status import scenario_status

__all__ = [
    "Allocator", "ArrivalForecast", "BudgetLease", "BudgetStore", "Calibration", "ConstraintMatrix", "ConstraintSpec",
    "CycleReport", "Decision", "LeaseState", "NearlineLoop", "NearlinePlanner", "SampleStore", "ScenarioSpec",
    "decide", "default_solve", "dmd_step", "planner_actor_name", "samples_instance", "scenario_status", "start_planner",
]
