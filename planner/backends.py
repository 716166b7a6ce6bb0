"""Choosing a kernel: numpy, numba, cupy (GPU) or ray, with safe detection of what is available."""

from __future__ import annotations

from planner.instance import Instance

__all__ = ["BACKENDS", "BackendUnavailable", "cupy_available", "available_backends", "default_backend",
           "make_kernel"]

BACKENDS = ("numpy", "numba", "cupy", "ray")  # every backend name the CLI accepts


class BackendUnavailable(RuntimeError):
    """A backend was asked for explicitly but cannot run here; the message says why."""


def cupy_status() -> tuple[bool, str]:
    """(usable, reason): CuPy imports and sees at least one CUDA device. Never raises."""
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # ImportError, or a broken CUDA install raising anything at import
        return False, f"cupy is not importable ({type(exc).__name__}: {exc}); install the 'gpu' extra"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"cupy found no usable CUDA device ({type(exc).__name__}: {exc})"
    if count < 1:
        return False, "cupy found no CUDA device"
    return True, f"{count} CUDA device(s)"


def cupy_available() -> bool:
    return cupy_status()[0]


def numba_status() -> tuple[bool, str]:
    try:
        import numba  # noqa: F401
    except Exception as exc:
        return False, f"numba is not importable ({type(exc).__name__}: {exc})"
    return True, "ok"


def available_backends() -> list[str]:
    """Single-process backends usable here, fastest first (ray is never chosen by default)."""
    found = []
    if cupy_available():
        found.append("cupy")
    if numba_status()[0]:
        found.append("numba")
    found.append("numpy")
    return found


def default_backend() -> str:
    return available_backends()[0]


def make_kernel(name: str, inst: Instance, first_user: int = 0):
    """An in-process kernel for `inst` (the ray backend is built by planner.ray_backend instead); `first_user`: the
    row of inst's first user in the whole instance (a partition's offset, which the tie-break hashes)."""
    if name == "numpy":
        from planner.kernels import ArrayKernel

        return ArrayKernel(inst, first_user=first_user)
    if name == "numba":
        ok, why = numba_status()
        if not ok:
            raise BackendUnavailable(f"backend 'numba' is unavailable: {why}")
        from planner.numba_kernels import NumbaKernel

        return NumbaKernel(inst, first_user=first_user)
    if name == "cupy":
        ok, why = cupy_status()
        if not ok:
            raise BackendUnavailable(f"backend 'cupy' is unavailable: {why}")
        import cupy

        from planner.kernels import ArrayKernel

        return ArrayKernel(inst, xp=cupy, chunk_users=1 << 22, name="cupy", first_user=first_user)
    raise BackendUnavailable(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
