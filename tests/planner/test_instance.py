"""Instance files: both kinds are read, and every kind of bad file is rejected with a message naming the array."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from planner.instance import (
    InstanceError,
    count_users,
    dense_consumption,
    load_instance,
    load_partition,
    save_instance,
    subset_users,
)
from tests.planner.planner_testlib import small_instance


def _arrays(inst):
    return {"c": inst.c, "mask": inst.mask, "item": inst.item, "w": inst.w, "A": inst.A, "b": inst.b,
            "kind": np.array("factored"), "ctype": np.array(inst.ctype), "cname": np.array(inst.cname)}


def _write(tmp_path, arrays, name="bad.npz"):
    path = tmp_path / name
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def test_factored_round_trip(tmp_path):
    """A saved factored instance loads back with identical arrays and labels."""
    inst = small_instance(n=300)
    save_instance(tmp_path / "i.npz", inst)
    back = load_instance(tmp_path / "i.npz")
    for name in ("c", "mask", "item", "w", "A", "b"):
        np.testing.assert_array_equal(getattr(back, name), getattr(inst, name))
    assert back.cname == inst.cname and back.ctype == inst.ctype and back.kind == "factored"


def test_dense_kind_is_read_as_the_same_lp(tmp_path):
    """A dense file (explicit M) loads into a factored form with exactly the same consumption m_ij^k."""
    inst = small_instance(n=200, K=5)
    save_instance(tmp_path / "d.npz", inst, dense=True)
    back = load_instance(tmp_path / "d.npz")
    assert back.kind == "dense"
    np.testing.assert_allclose(dense_consumption(back), dense_consumption(inst), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("array,mutate,problem", [
    ("w", lambda a: a.pop("w"), "missing"),
    ("kind", lambda a: a.pop("kind"), "missing"),
    ("kind", lambda a: a.update(kind=np.array("sparse")), "unknown kind"),
    ("mask", lambda a: a.update(mask=a["mask"][:, :3]), "shape"),
    ("c", lambda a: a.update(c=a["c"][:, :, None]), "shape"),
    ("mask", lambda a: a.update(mask=a["mask"].astype(np.int8)), "dtype"),
    ("item", lambda a: a.update(item=a["item"].astype(np.int64)), "dtype"),
    ("c", lambda a: a.update(c=a["c"].astype(np.float32)), "dtype"),
    ("b", lambda a: a.update(b=-a["b"]), "<= 0"),
    ("w", lambda a: a["w"].__setitem__((0, 0, 0), -1.0), "negative"),
    ("A", lambda a: a["A"].__setitem__((0, 0, 0), np.nan), "NaN"),
    ("c", lambda a: a["c"].__setitem__((1, 1), np.inf), "infinite"),
    ("item", lambda a: a["item"].__setitem__((0, 0), 10_000), "ids must lie in"),
    ("A", lambda a: a.update(A=a["A"][:, :, :3]), "shape"),
])
def test_bad_files_name_array_and_problem(tmp_path, array, mutate, problem):
    """Each problem (missing, shape, dtype, negative, NaN, infinite, out of range) is an InstanceError naming the
    file, the array and the problem."""
    arrays = {k: np.array(v, copy=True) for k, v in _arrays(small_instance(n=50, K=4)).items()}
    mutate(arrays)
    path = _write(tmp_path, arrays)
    with pytest.raises(InstanceError) as err:
        load_instance(path)
    msg = str(err.value)
    assert str(path) in msg and f"'{array}'" in msg and problem in msg


def test_dense_kind_rejects_negative_usage(tmp_path):
    """A dense file with a negative m_ij^k is rejected naming M."""
    inst = small_instance(n=40, K=3)
    M = dense_consumption(inst)
    M[0, 0, 0] = -0.5
    path = _write(tmp_path, {"c": inst.c, "mask": inst.mask, "M": M, "b": inst.b, "kind": np.array("dense")})
    with pytest.raises(InstanceError, match="'M'.*negative"):
        load_instance(path)


def test_not_an_npz(tmp_path):
    """A file that is not an .npz gives an InstanceError, not a zipfile traceback."""
    path = tmp_path / "x.npz"
    path.write_text("hello")
    with pytest.raises(InstanceError, match="not a readable"):
        load_instance(path)


def test_partition_reads_only_its_rows(tmp_path):
    """load_partition(path, a, b) equals the in-memory row subset, with all of A and b."""
    inst = small_instance(n=500)
    save_instance(tmp_path / "i.npz", inst)
    part = load_partition(tmp_path / "i.npz", 120, 333)
    ref = subset_users(inst, slice(120, 333))
    for name in ("c", "mask", "item", "w", "A", "b"):
        np.testing.assert_array_equal(getattr(part, name), getattr(ref, name))
    assert count_users(tmp_path / "i.npz") == 500
    assert load_partition(tmp_path / "i.npz", 0, 0).n == 0


def _npy_bytes(shape, dtype="<f8", data: bytes = b"") -> bytes:
    """A .npy file whose header declares `shape` and `dtype`, followed by `data` (however short)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue() + data


def _zip_with(tmp_path, members: dict, name="adv.npz", compress=zipfile.ZIP_DEFLATED):
    """An .npz of a valid small instance whose members are replaced or added by raw `members` bytes."""
    base = small_instance(n=20, K=3)
    arrays = _arrays(base)
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        for key, arr in arrays.items():
            if key not in members:
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.asarray(arr))
                zf.writestr(f"{key}.npy", buf.getvalue())
        for key, raw in members.items():
            zf.writestr(f"{key}.npy", raw)
    return path


def test_compressed_member_declaring_gigabytes_is_refused_without_decompressing(tmp_path, monkeypatch):
    """A small compressed member whose header declares 8 GB is refused from its header alone: no member's data
    is read, nothing large is allocated, and the message names the array."""
    declared = (1_000_000_000,)  # 8 GB of float64
    path = _zip_with(tmp_path, {"c": _npy_bytes(declared, data=bytes(35 << 20))})
    assert path.stat().st_size < 1 << 20  # 35 MB of zeros compress to a few tens of KB
    import planner.instance as instance_mod

    read = instance_mod.read_member
    monkeypatch.setattr(instance_mod, "read_member",
                        lambda zf, h: read(zf, h) if h.name == "kind" else pytest.fail(f"read {h.name}"))
    with pytest.raises(InstanceError, match=r"'c'.*declares shape \(1000000000,\)"):
        load_instance(path)


def test_consistent_but_oversized_declaration_is_refused_by_the_budget(tmp_path, monkeypatch):
    """Arrays whose declared sizes agree with each other but exceed the memory budget are refused before any data
    is read, naming the largest array and the budget."""
    inst = small_instance(n=2000, K=4)
    path = tmp_path / "i.npz"
    save_instance(path, inst)
    import planner.instance as instance_mod

    read = instance_mod.read_member
    monkeypatch.setattr(instance_mod, "read_member",
                        lambda zf, h: read(zf, h) if h.name == "kind" else pytest.fail(f"read {h.name}"))
    with pytest.raises(InstanceError, match=r"'w'.*over the memory budget of 100.0 KiB"):
        load_instance(path, budget_bytes=100 << 10)
    with pytest.raises(InstanceError, match="over the memory budget"):
        load_partition(path, 0, 2000, budget_bytes=100 << 10)


def test_dense_file_with_huge_K_does_not_allocate_its_identity(tmp_path):
    """A dense file with M of shape (0, 0, 60000) would need a 26.8 GiB K x K identity in factored form: it is
    refused naming 'M' under the default budget (at most 16 GiB), before anything is allocated."""
    K = 60_000
    arrays = {"c": np.zeros((0, 0)), "mask": np.zeros((0, 0), bool), "M": np.zeros((0, 0, K)),
              "b": np.ones(K), "kind": np.array("dense")}
    path = _write(tmp_path, arrays)
    with pytest.raises(InstanceError, match=r"'M'.*26.8 GiB.*memory budget"):
        load_instance(path)


@pytest.mark.parametrize("member,raw,problem", [
    ("c", _npy_bytes((50, 6), dtype="|O"), "pickle"),
    ("w", b"not an npy file at all", "not a .npy array"),
    ("mask", _npy_bytes((50, 6), dtype="|b1", data=b"\x01" * 10), "holds only"),
    ("item", _npy_bytes((7, 6), dtype="<i4", data=bytes(7 * 6 * 4)), "shape (7, 6), expected (20, 6)"),
    ("seed", _npy_bytes((2,), dtype="<i8", data=bytes(16)), "integer scalar"),
    ("kind", _npy_bytes((), dtype="<f8", data=bytes(8)), "string scalar"),
])
def test_adversarial_members_name_the_array(tmp_path, member, raw, problem):
    """Pickled objects, non-.npy bytes, truncated data, shapes that disagree with the others, a seed that is not
    a scalar, a kind that is not a string: each is an InstanceError naming the file, the array and the problem."""
    path = _zip_with(tmp_path, {member: raw})
    with pytest.raises(InstanceError) as err:
        load_instance(path)
    msg = str(err.value)
    assert str(path) in msg and f"'{member}'" in msg and problem in msg
