"""raygate planner: the allocation LP, instance IO, dual solvers (NumPy, Numba, CuPy, Ray) and the dual-price store.

Importing the package compiles nothing and reads no environment; Numba kernels compile on first use.
"""

from planner.api import solve_file, solve_loaded
from planner.backends import BackendUnavailable, available_backends, default_backend, make_kernel
from planner.generate import FAMILIES, GeneratorConfig, family_config, generate_instance
from planner.instance import Instance, InstanceError, load_instance, load_partition, save_instance
from planner.kernels import ArrayKernel, PassResult
from planner.solver import Certificate, Solution, SolverConfig, WarmStart, solve
from planner.store import DualPriceReader, DualPriceStore, DualPrices
from planner.warmstart import WarmStartConfig, solve_warm

__all__ = [
    "ArrayKernel", "available_backends", "BackendUnavailable", "Certificate", "default_backend", "DualPriceReader",
    "DualPrices", "DualPriceStore", "FAMILIES", "family_config", "generate_instance", "GeneratorConfig", "Instance",
    "InstanceError", "load_instance", "load_partition", "make_kernel", "PassResult", "save_instance", "Solution",
    "solve", "solve_file", "solve_loaded", "solve_warm", "SolverConfig", "WarmStart", "WarmStartConfig",
]
