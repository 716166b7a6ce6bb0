"""Reading `.npz` members safely: every member's `.npy` header is read (a few hundred bytes, decompressing nothing
else) and checked before any array is loaded.

What a header alone tells: the array's dtype (object arrays, which need pickle, are refused), its shape and so
its size in bytes, and - from the zip directory - how many bytes the member really holds. A member that declares
more than it holds, or arrays (plus what the loader derives from them) that exceed the memory budget, are refused
with the array's name before a byte of data is decompressed: a small compressed file cannot make the loader
allocate gigabytes.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DEFAULT_BUDGET_CAP", "ArrayHeader", "NpzError", "read_headers", "read_member", "read_member_rows",
           "memory_budget_bytes", "format_bytes"]


class NpzError(ValueError):
    """A member of an .npz cannot be read safely; `array` names it (or is None for the file as a whole)."""

    def __init__(self, array: str | None, problem: str):
        super().__init__(problem)
        self.array = array
        self.problem = problem


@dataclass(frozen=True)
class ArrayHeader:
    """What one member's .npy header declares."""

    name: str  # array name (the member name without ".npy")
    member: str  # member name inside the zip
    shape: tuple[int, ...]  # declared shape
    dtype: np.dtype  # declared dtype
    fortran: bool  # Fortran (column-major) order
    offset: int  # bytes of magic + header before the data

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.float64) * self.dtype.itemsize)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


DEFAULT_BUDGET_CAP = 16 << 30  # the default budget never exceeds this (a 10M x 10 x 1,000 instance needs ~3 GiB)


def memory_budget_bytes(fraction: float = 0.5, cap: int = DEFAULT_BUDGET_CAP) -> int:
    """Default budget: `fraction` of the memory available now (MemAvailable, else physical), at most `cap`.
    Larger files need an explicit budget (`--memory-budget-gb`)."""
    return min(cap, _available_bytes(fraction))


def _available_bytes(fraction: float) -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(int(line.split()[1]) * 1024 * fraction)
    except OSError:
        pass
    try:
        import os

        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * fraction)
    except (ValueError, OSError, AttributeError):  # pragma: no cover - no sysconf
        return 4 << 30


def _header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> ArrayHeader:
    name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
    try:
        with zf.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=10_000)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=10_000)
            offset = fh.tell()
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, SyntaxError) as exc:
        raise NpzError(name, f"not a .npy array ({exc})") from None
    header = ArrayHeader(name, info.filename, tuple(int(x) for x in shape), np.dtype(dtype), bool(fortran), offset)
    if header.dtype.hasobject:
        raise NpzError(name, f"dtype {header.dtype} holds Python objects (pickle), which are never loaded")
    if any(d < 0 for d in header.shape):
        raise NpzError(name, f"negative dimension in shape {header.shape}")
    if info.file_size < offset + header.nbytes:
        raise NpzError(name, f"declares shape {header.shape} ({format_bytes(header.nbytes)}) but the member "
                             f"holds only {format_bytes(max(0, info.file_size - offset))} of data")
    return header


def read_headers(zf: zipfile.ZipFile) -> dict[str, ArrayHeader]:
    """Every member's header, by array name (nothing but the headers is decompressed)."""
    return {h.name: h for h in (_header(zf, info) for info in zf.infolist())}


def read_member(zf: zipfile.ZipFile, header: ArrayHeader) -> np.ndarray:
    """The whole array of one checked member."""
    try:
        with zf.open(header.member) as fh:
            return np.lib.format.read_array(fh, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise NpzError(header.name, f"unreadable data ({exc})") from None


def read_member_rows(zf: zipfile.ZipFile, header: ArrayHeader, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of one checked member, skipping the rows before (read, not kept, when compressed)."""
    if header.fortran or len(header.shape) == 0:
        return read_member(zf, header)[start:stop]
    row_bytes = int(np.prod(header.shape[1:], dtype=np.int64)) * header.dtype.itemsize
    stop = min(stop, header.shape[0])
    start = min(start, stop)
    try:
        with zf.open(header.member) as fh:
            fh.seek(header.offset + start * row_bytes)
            buf = fh.read((stop - start) * row_bytes)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise NpzError(header.name, f"unreadable data ({exc})") from None
    if len(buf) != (stop - start) * row_bytes:
        raise NpzError(header.name, "data shorter than its header declares")
    return np.frombuffer(buf, dtype=header.dtype).reshape((stop - start,) + header.shape[1:]).copy()
