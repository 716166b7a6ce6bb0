"""Backend detection: CuPy is optional and detected safely; asking for a missing backend is a clear error."""

from __future__ import annotations

import pytest

from planner.backends import (
    BackendUnavailable,
    available_backends,
    cupy_status,
    default_backend,
    make_kernel,
)
from tests.planner.planner_testlib import small_instance


def test_cupy_detection_never_raises_and_explicit_request_is_clear():
    """Without CuPy or a GPU, cupy is not offered and asking for it names the reason."""
    ok, why = cupy_status()
    if ok:
        pytest.skip("a GPU is present here")
    assert "cupy" not in available_backends()
    with pytest.raises(BackendUnavailable, match="cupy"):
        make_kernel("cupy", small_instance(n=10))


def test_default_is_fastest_available_and_unknown_is_rejected():
    """The default is the first of cupy > numba > numpy that works; unknown names are rejected."""
    assert default_backend() == available_backends()[0]
    assert "numpy" in available_backends()
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        make_kernel("tpu", small_instance(n=10))
