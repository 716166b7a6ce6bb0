"""Backend detection: CuPy is optional and detected safely; the default is the fastest that works here."""

from __future__ import annotations

import pytest

import planner.backends as backends
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


@pytest.mark.parametrize("cupy_ok,numba_ok,expected", [
    (True, True, "cupy"), (False, True, "numba"), (True, False, "cupy"), (False, False, "numpy"),
])
def test_default_prefers_cupy_then_numba_then_numpy(monkeypatch, cupy_ok, numba_ok, expected):
    """Whatever this machine has, the default follows cupy > numba > numpy over what detection reports."""
    monkeypatch.setattr(backends, "cupy_status", lambda: (cupy_ok, "faked"))
    monkeypatch.setattr(backends, "numba_status", lambda: (numba_ok, "faked"))
    assert default_backend() == expected
    assert available_backends()[-1] == "numpy"


def test_unknown_backend_is_rejected():
    """An unknown name is an error that lists the known ones."""
    with pytest.raises(BackendUnavailable, match="unknown backend 'tpu'.*numpy"):
        make_kernel("tpu", small_instance(n=10))
