"""Allocation LP instances: the in-memory form, reading and validating `.npz` files, writing them, row subsets.

The file format is `shared/lp-instance-format.md` (version 1). Both kinds are read; a `dense` instance is turned into
the factored form on load (R = K usage types, one catalog item, A[r, 0, k] = 1 if r == k), so every solver sees one
representation: m_ij^k = sum_r w[i, j, r] * A[r, item[i, j], k].
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from planner.npz_reader import (ArrayHeader, NpzError, format_bytes, memory_budget_bytes, read_headers, read_member,
                                read_member_rows)

__all__ = [
    "Instance",
    "InstanceError",
    "load_instance",
    "load_partition",
    "save_instance",
    "validate_arrays",
    "dense_consumption",
    "subset_users",
    "count_users",
    "check_declared",
]

PER_USER_ARRAYS = ("c", "mask", "item", "w", "M")  # arrays with one row per user (loadable by row range)
KNOWN_ARRAYS = PER_USER_ARRAYS + ("A", "b", "kind", "ctype", "cname", "n", "J", "K", "P", "R", "seed")  # the rest
# of a file's members is never loaded
SMALL_BYTES = 1 << 20  # scalars (kind, n, seed, ...) must declare at most this much


class InstanceError(ValueError):
    """An instance file or array set is not a valid allocation LP; the message names the file, array and problem."""


@dataclass(frozen=True)
class Instance:
    """One allocation LP in factored form (see the module docstring); arrays are validated once, at construction
    through `validate_arrays` / `load_instance`, and never mutated afterwards."""

    c: np.ndarray  # (n, J) float64: value of slot j for user i, 0 on padding
    mask: np.ndarray  # (n, J) bool: slot j is a real candidate of user i
    item: np.ndarray  # (n, J) int32: catalog item in [0, P) shown in slot j
    w: np.ndarray  # (n, J, R) float64: usage of each type by the allocation, >= 0
    A: np.ndarray  # (R, P, K) float64: weight of item p's usage type r in constraint k, >= 0
    b: np.ndarray  # (K,) float64: capacities, > 0
    ctype: tuple[str, ...]  # K constraint type labels (item_budget, category_cap, total_spend, total_count, ...)
    cname: tuple[str, ...]  # K readable constraint names
    kind: str = "factored"  # the kind the file had ("factored" or "dense"); the arrays here are always factored
    seed: int = -1  # generator seed, -1 when unknown

    @property
    def n(self) -> int:
        return int(self.c.shape[0])

    @property
    def J(self) -> int:
        return int(self.c.shape[1])

    @property
    def R(self) -> int:
        return int(self.w.shape[2])

    @property
    def P(self) -> int:
        return int(self.A.shape[1])

    @property
    def K(self) -> int:
        return int(self.b.shape[0])

    def with_capacities(self, b: np.ndarray) -> "Instance":
        """The same instance with other capacities (for sampling and pacing)."""
        return replace(self, b=np.ascontiguousarray(b, dtype=np.float64))


def _fail(source: str, array: str, problem: str) -> InstanceError:
    return InstanceError(f"{source}: array '{array}': {problem}")


def _check_dtype(source: str, name: str, arr: np.ndarray, dtype) -> None:
    if arr.dtype != np.dtype(dtype):
        raise _fail(source, name, f"dtype {arr.dtype}, expected {np.dtype(dtype)}")


def _check_shape(source: str, name: str, arr: np.ndarray, shape: tuple) -> None:
    if tuple(arr.shape) != tuple(shape):
        raise _fail(source, name, f"shape {tuple(arr.shape)}, expected {tuple(shape)}")


def _check_finite(source: str, name: str, arr: np.ndarray, nonneg: bool, positive: bool = False) -> None:
    if arr.size == 0:
        return
    if np.isnan(arr).any():
        raise _fail(source, name, f"{int(np.isnan(arr).sum())} NaN value(s)")
    if not np.isfinite(arr).all():
        raise _fail(source, name, f"{int((~np.isfinite(arr)).sum())} infinite value(s)")
    if positive and (arr <= 0).any():
        raise _fail(source, name, f"{int((arr <= 0).sum())} value(s) <= 0 (capacities must be > 0), "
                                  f"smallest {float(arr.min())!r}")
    if nonneg and (arr < 0).any():
        raise _fail(source, name, f"{int((arr < 0).sum())} negative value(s), smallest {float(arr.min())!r}")


def _labels(source: str, name: str, arrays: dict, K: int, default_prefix: str) -> tuple[str, ...]:
    if name not in arrays:
        return tuple(f"{default_prefix}{k}" for k in range(K))
    arr = np.asarray(arrays[name])
    if arr.dtype.kind not in "US":
        raise _fail(source, name, f"dtype {arr.dtype}, expected a string array")
    _check_shape(source, name, arr, (K,))
    return tuple(str(x) for x in arr.tolist())


def _scalar_str(source: str, arrays: dict, name: str) -> str:
    arr = np.asarray(arrays[name])
    if arr.shape != () or arr.dtype.kind not in "US":
        raise _fail(source, name, f"expected a string scalar, got dtype {arr.dtype} shape {arr.shape}")
    return str(arr[()])


def validate_arrays(arrays: dict, source: str = "<arrays>", check_values: bool = True) -> Instance:
    """Check a mapping of arrays against the instance format and return the (factored) Instance.

    Raises InstanceError naming `source`, the array and the problem: missing, wrong shape or dtype, negative,
    NaN or infinite values, item ids out of range, unknown kind.
    """
    if "kind" not in arrays:
        raise _fail(source, "kind", "missing (expected 'factored' or 'dense')")
    kind = _scalar_str(source, arrays, "kind")
    if kind not in ("factored", "dense"):
        raise _fail(source, "kind", f"unknown kind {kind!r} (expected 'factored' or 'dense')")
    required = ("c", "mask", "b") + (("item", "w", "A") if kind == "factored" else ("M",))
    for name in required:
        if name not in arrays:
            raise _fail(source, name, f"missing (required for kind {kind!r})")
    c = np.asarray(arrays["c"])
    mask = np.asarray(arrays["mask"])
    b = np.asarray(arrays["b"])
    _check_dtype(source, "c", c, np.float64)
    if c.ndim != 2:
        raise _fail(source, "c", f"shape {c.shape}, expected (n, J)")
    n, J = c.shape
    _check_dtype(source, "mask", mask, np.bool_)
    _check_shape(source, "mask", mask, (n, J))
    _check_dtype(source, "b", b, np.float64)
    if b.ndim != 1 or b.shape[0] < 1:
        raise _fail(source, "b", f"shape {b.shape}, expected (K,) with K >= 1")
    K = b.shape[0]
    if kind == "factored":
        item = np.asarray(arrays["item"])
        w = np.asarray(arrays["w"])
        A = np.asarray(arrays["A"])
        _check_dtype(source, "item", item, np.int32)
        _check_shape(source, "item", item, (n, J))
        _check_dtype(source, "w", w, np.float64)
        if w.ndim != 3 or w.shape[:2] != (n, J):
            raise _fail(source, "w", f"shape {w.shape}, expected ({n}, {J}, R)")
        R = w.shape[2]
        _check_dtype(source, "A", A, np.float64)
        if A.ndim != 3 or A.shape[0] != R or A.shape[2] != K:
            raise _fail(source, "A", f"shape {A.shape}, expected ({R}, P, {K})")
        P = A.shape[1]
        if P < 1:
            raise _fail(source, "A", "P = 0 catalog items")
        if check_values and item.size:
            lo, hi = int(item.min()), int(item.max())
            if lo < 0 or hi >= P:
                raise _fail(source, "item", f"ids must lie in [0, {P}), found range [{lo}, {hi}]")
    else:
        M = np.asarray(arrays["M"])
        _check_dtype(source, "M", M, np.float64)
        _check_shape(source, "M", M, (n, J, K))
        R, P = K, 1
    for name, expect in (("n", n), ("J", J), ("K", K), ("P", P), ("R", R)):
        if name in arrays:
            val = np.asarray(arrays[name])
            if val.shape != () or val.dtype.kind not in "iu":
                raise _fail(source, name, f"expected an integer scalar, got dtype {val.dtype} shape {val.shape}")
            if kind == "dense" and name in ("P", "R"):
                continue
            if int(val) != expect:
                raise _fail(source, name, f"says {int(val)} but the arrays have {expect}")
    if check_values:
        _check_finite(source, "c", c, nonneg=False)
        _check_finite(source, "b", b, nonneg=True, positive=True)
        if kind == "factored":
            _check_finite(source, "w", w, nonneg=True)
            _check_finite(source, "A", A, nonneg=True)
        else:
            _check_finite(source, "M", M, nonneg=True)
    if kind == "dense":
        item = np.zeros((n, J), dtype=np.int32)
        w = M
        A = np.eye(K, dtype=np.float64).reshape(K, 1, K)
    ctype = _labels(source, "ctype", arrays, K, "constraint")
    cname = _labels(source, "cname", arrays, K, "k")
    seed = -1
    if "seed" in arrays:
        val = np.asarray(arrays["seed"])
        if val.shape != () or val.dtype.kind not in "iu":
            raise _fail(source, "seed", f"expected an integer scalar, got dtype {val.dtype} shape {val.shape}")
        seed = int(val)
    return Instance(
        c=np.ascontiguousarray(c), mask=np.ascontiguousarray(mask), item=np.ascontiguousarray(item),
        w=np.ascontiguousarray(w), A=np.ascontiguousarray(A), b=np.ascontiguousarray(b),
        ctype=ctype, cname=cname, kind=kind, seed=seed,
    )


def _dims(source: str, headers: dict[str, ArrayHeader], name: str, ndim: int) -> tuple[int, ...] | None:
    h = headers.get(name)
    if h is None:
        return None
    if len(h.shape) != ndim:
        raise _fail(source, name, f"shape {h.shape}, expected {ndim} dimensions")
    return h.shape


def check_declared(headers: dict[str, ArrayHeader], kind: str, source: str, budget_bytes: int,
                   rows: int | None = None) -> int:
    """Shapes that agree with each other and bytes within the budget, from the headers alone (nothing loaded).

    `rows`: only that many users will be read (a partition). Counts what loading would allocate, including the
    factored form of a dense file (an identity A of K x K). Returns the planned bytes; InstanceError otherwise.
    """
    c, b = _dims(source, headers, "c", 2), _dims(source, headers, "b", 1)
    expect = {"mask": c, "item": c}
    if c is not None:
        n, J = c
        if kind == "dense" and b is not None:
            expect["M"] = (n, J, b[0])
        w = _dims(source, headers, "w", 3)
        if w is not None:
            expect["w"] = (n, J, w[2])
            A = _dims(source, headers, "A", 3)
            if A is not None and b is not None and (A[0] != w[2] or A[2] != b[0]):
                raise _fail(source, "A", f"shape {A}, expected ({w[2]}, P, {b[0]})")
    for name, shape in expect.items():
        if shape is not None and name in headers and headers[name].shape != tuple(shape):
            raise _fail(source, name, f"shape {headers[name].shape}, expected {tuple(shape)}")
    planned = 0
    for name, h in headers.items():
        if name not in KNOWN_ARRAYS:
            continue
        share = 1.0 if rows is None or name not in PER_USER_ARRAYS or not h.shape[0] else \
            min(1.0, rows / h.shape[0])
        planned += int(h.nbytes * share)
    if kind == "dense" and b is not None and c is not None:
        users = c[0] if rows is None else min(rows, c[0])
        planned += b[0] * b[0] * 8 + users * c[1] * 4  # the identity A and the item ids of the factored form
    if planned > budget_bytes:
        biggest = max((h for n_, h in headers.items() if n_ in KNOWN_ARRAYS), key=lambda h: h.nbytes,
                      default=None)
        name = "M" if kind == "dense" and "M" in headers and b is not None and b[0] * b[0] * 8 > budget_bytes \
            else (biggest.name if biggest is not None else "c")
        raise _fail(source, name, f"loading would need {format_bytes(planned)} (largest array '{biggest.name}' "
                                  f"{biggest.shape} {biggest.dtype}), over the memory budget of "
                                  f"{format_bytes(budget_bytes)}")
    return planned


def _open_checked(path: Path, source: str, budget_bytes: int | None, rows_wanted: int | None):
    """(zip file, headers) with every header checked against the format and the budget."""
    if not path.exists():
        raise InstanceError(f"{source}: no such file")
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InstanceError(f"{source}: not a readable .npz file ({exc})") from None
    try:
        headers = read_headers(zf)
        if "kind" not in headers:
            raise _fail(source, "kind", "missing (expected 'factored' or 'dense')")
        if headers["kind"].nbytes > SMALL_BYTES:
            raise _fail(source, "kind", f"declares {format_bytes(headers['kind'].nbytes)} for a string scalar")
        kind = _scalar_str(source, {"kind": read_member(zf, headers["kind"])}, "kind")
        budget = memory_budget_bytes() if budget_bytes is None else budget_bytes
        check_declared(headers, kind, source, budget, rows_wanted)
    except NpzError as exc:
        zf.close()
        raise _fail(source, exc.array, exc.problem) if exc.array else InstanceError(f"{source}: {exc}") from None
    except BaseException:
        zf.close()
        raise
    return zf, headers


def load_instance(path: str | Path, budget_bytes: int | None = None) -> Instance:
    """Read and validate an instance file; InstanceError for anything that is not a valid version-1 instance.

    Headers are checked first (shapes, dtypes that need pickle, sizes against `budget_bytes`, by default half of
    the memory available now), so a bad or oversized file is refused before its data is decompressed.
    """
    path = Path(path)
    source = str(path)
    zf, headers = _open_checked(path, source, budget_bytes, None)
    arrays = {}
    with zf:
        for name, h in headers.items():
            if name in KNOWN_ARRAYS:
                try:
                    arrays[name] = read_member(zf, h)
                except NpzError as exc:
                    raise _fail(source, exc.array, exc.problem) from None
    return validate_arrays(arrays, source)


def load_partition(path: str | Path, start: int, stop: int, budget_bytes: int | None = None) -> Instance:
    """Users [start, stop) of an instance file (all of A, b and labels), reading only those users' rows.

    Used by Ray workers so that no process ever holds the whole file. Values are validated for the rows read.
    """
    path = Path(path)
    source = f"{path}[{start}:{stop}]"
    zf, headers = _open_checked(path, source, budget_bytes, max(0, stop - start))
    arrays = {}
    with zf:
        for name, h in headers.items():
            if name not in KNOWN_ARRAYS or name == "n":
                continue
            try:
                arrays[name] = read_member_rows(zf, h, start, stop) if name in PER_USER_ARRAYS else \
                    read_member(zf, h)
            except NpzError as exc:
                raise _fail(source, exc.array, exc.problem) from None
    return validate_arrays(arrays, source)


def save_instance(path: str | Path, inst: Instance, dense: bool = False, compress: bool = False) -> None:
    """Write `inst` in the version-1 format (kind `dense` with explicit M when `dense`, else `factored`)."""
    arrays = {
        "c": inst.c, "mask": inst.mask, "b": inst.b,
        "ctype": np.array(inst.ctype, dtype=str), "cname": np.array(inst.cname, dtype=str),
        "n": np.int64(inst.n), "J": np.int64(inst.J), "K": np.int64(inst.K), "seed": np.int64(inst.seed),
    }
    if dense:
        arrays.update(kind=np.array("dense"), M=dense_consumption(inst))
    else:
        arrays.update(kind=np.array("factored"), item=inst.item, w=inst.w, A=inst.A,
                      P=np.int64(inst.P), R=np.int64(inst.R))
    save = np.savez_compressed if compress else np.savez
    with open(path, "wb") as fh:  # a file object keeps numpy from appending ".npz" to the name
        save(fh, **arrays)


def dense_consumption(inst: Instance) -> np.ndarray:
    """Explicit m_ij^k, shape (n, J, K); only for small instances."""
    return np.einsum("ijr,ijrk->ijk", inst.w, inst.A[:, inst.item, :].transpose(1, 2, 0, 3))


def subset_users(inst: Instance, rows: np.ndarray | slice) -> Instance:
    """The same LP restricted to some users (capacities unchanged)."""
    return replace(inst, c=np.ascontiguousarray(inst.c[rows]), mask=np.ascontiguousarray(inst.mask[rows]),
                   item=np.ascontiguousarray(inst.item[rows]), w=np.ascontiguousarray(inst.w[rows]))


def count_users(path: str | Path) -> int:
    """Number of users in an instance file, from the header of its `c` array (nothing else is read)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            headers = read_headers(zf)
    except NpzError as exc:
        raise _fail(str(path), exc.array, exc.problem) from None
    except (OSError, zipfile.BadZipFile) as exc:
        raise InstanceError(f"{path}: not a readable .npz file ({exc})") from None
    if "c" not in headers:
        raise InstanceError(f"{path}: array 'c': missing")
    if len(headers["c"].shape) != 2:
        raise InstanceError(f"{path}: array 'c': shape {headers['c'].shape}, expected (n, J)")
    return int(headers["c"].shape[0])
