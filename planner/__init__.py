"""raygate planner: the allocation LP, instance IO, dual solvers (NumPy, Numba, CuPy, Ray) and the dual-price store.

Importing the package compiles nothing and reads no environment; Numba kernels compile on first use.
"""

from planner.api import solve_file, solve_loaded
from planner.backends import BackendUnavailable, available_backends, default_backend, make_kernel
from planner.generate import GeneratorConfig, generate_instance
from planner.instance import Instance, InstanceError, load_instance, load_partition, save_instance
from planner.kernels import ArrayKernel, PassResult
from planner.solver import Certificate, Solution, SolverConfig, solve
from planner.store import DualPriceReader, DualPriceStore, DualPrices

__all__ = [
    "ArrayKernel", "BackendUnavailable", "Certificate", "DualPriceReader", "DualPriceStore", "DualPrices",
    "GeneratorConfig", "Instance", "InstanceError", "PassResult", "Solution", "SolverConfig", "available_backends",
    "default_backend", "generate_instance", "load_instance", "load_partition", "make_kernel", "save_instance",
    "solve", "solve_file", "solve_loaded",
]
