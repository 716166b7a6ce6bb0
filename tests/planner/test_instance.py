"""Instance files: both kinds are read, and every kind of bad file is rejected with a message naming the array."""

from __future__ import annotations

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
