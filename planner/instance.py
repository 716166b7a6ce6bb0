"""Allocation LP instances: the in-memory form, reading and validating `.npz` files, writing them, row subsets.

The file format is `shared/lp-instance-format.md` (version 1). Both kinds are read; a `dense` instance is turned into
the factored form on load (R = K usage types, one catalog item, A[r, 0, k] = 1 if r == k), so every solver sees one
representation: m_ij^k = sum_r w[i, j, r] * A[r, item[i, j], k].
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

__all__ = [
    "Instance",
    "InstanceError",
    "load_instance",
    "load_partition",
    "save_instance",
    "validate_arrays",
    "dense_consumption",
    "subset_users",
    "instance_sizes",
    "count_users",
]

PER_USER_ARRAYS = ("c", "mask", "item", "w")  # arrays with one row per user (loadable by row range)


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


def instance_sizes(inst: Instance) -> dict[str, int]:
    return {"n": inst.n, "J": inst.J, "K": inst.K, "P": inst.P, "R": inst.R}


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
    seed = int(np.asarray(arrays["seed"])) if "seed" in arrays else -1
    return Instance(
        c=np.ascontiguousarray(c), mask=np.ascontiguousarray(mask), item=np.ascontiguousarray(item),
        w=np.ascontiguousarray(w), A=np.ascontiguousarray(A), b=np.ascontiguousarray(b),
        ctype=ctype, cname=cname, kind=kind, seed=seed,
    )


def load_instance(path: str | Path) -> Instance:
    """Read and validate an instance file; InstanceError for anything that is not a valid version-1 instance."""
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise InstanceError(f"{source}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except InstanceError:
        raise
    except ValueError as exc:  # object arrays need pickle, which we never allow
        raise InstanceError(f"{source}: not a readable .npz file of plain arrays ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InstanceError(f"{source}: not a readable .npz file ({exc})") from None
    return validate_arrays(arrays, source)


def _read_rows(zf: zipfile.ZipFile, member: str, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of one .npy member of an .npz, reading only those bytes when the member is stored."""
    with zf.open(member) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        if fortran or len(shape) == 0:
            fh.seek(0)
            return np.lib.format.read_array(io.BytesIO(fh.read()), allow_pickle=False)[start:stop]
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        stop = min(stop, shape[0])
        start = min(start, stop)
        fh.seek(fh.tell() + start * row_bytes)
        buf = fh.read((stop - start) * row_bytes)
        return np.frombuffer(buf, dtype=dtype).reshape((stop - start,) + tuple(shape[1:])).copy()


def load_partition(path: str | Path, start: int, stop: int) -> Instance:
    """Users [start, stop) of an instance file (all of A, b and labels), reading only those users' rows.

    Used by Ray workers so that no process ever holds the whole file. Values are validated for the rows read.
    """
    path = Path(path)
    source = f"{path}[{start}:{stop}]"
    try:
        with zipfile.ZipFile(path) as zf:
            names = {n[:-4] if n.endswith(".npy") else n: n for n in zf.namelist()}
            arrays = {}
            for name, member in names.items():
                if name in PER_USER_ARRAYS or name == "M":
                    arrays[name] = _read_rows(zf, member, start, stop)
                else:
                    with zf.open(member) as fh:
                        arrays[name] = np.lib.format.read_array(io.BytesIO(fh.read()), allow_pickle=False)
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise InstanceError(f"{source}: not a readable .npz file ({exc})") from None
    arrays.pop("n", None)
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
            with zf.open("c.npy") as fh:
                version = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, _, _ = read(fh)
    except KeyError:
        raise InstanceError(f"{path}: array 'c': missing") from None
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise InstanceError(f"{path}: not a readable .npz file ({exc})") from None
    if len(shape) != 2:
        raise InstanceError(f"{path}: array 'c': shape {shape}, expected (n, J)")
    return int(shape[0])
