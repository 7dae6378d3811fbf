"""The in-force store: seeded from the configuration's files, atomic writes, history, rollback."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cabinet.errors import CabinetError
from cabinet.inforce import InForce, atomic_write

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


class Crash(BaseException):
    """A power cut: nothing after it runs (BaseException, so no `except Exception` eats it)."""


def _store(tmp_path: Path, **kw) -> InForce:
    seeds = tmp_path / "seeds"
    seeds.mkdir(exist_ok=True)
    for kind in ("catalog", "planogram"):
        shutil.copy(FIXTURES / f"{kind}.yaml", seeds / f"{kind}.yaml")
    return InForce(tmp_path / "var", {k: seeds / f"{k}.yaml" for k in ("catalog", "planogram")},
                   **kw)


def test_before_the_first_apply_the_configured_file_is_in_force_and_nothing_is_written(tmp_path):
    store = _store(tmp_path)
    assert store.path("planogram") == tmp_path / "seeds" / "planogram.yaml"
    assert store.read("planogram") == (FIXTURES / "planogram.yaml").read_bytes()
    assert store.previous("planogram") is None
    assert not (tmp_path / "var").exists()


def test_apply_keeps_the_previous_version_and_rollback_restores_its_bytes(tmp_path):
    store = _store(tmp_path)
    seed = store.read("catalog")
    store.apply("catalog", b"version: 2\n")
    store.apply("catalog", b"version: 3\n")
    assert store.path("catalog") == tmp_path / "var" / "in-force" / "catalog.yaml"
    assert store.read("catalog") == b"version: 3\n"
    assert [p.read_bytes() for p in store.history("catalog")] == [seed, b"version: 2\n"]
    assert store.rollback("catalog") == b"version: 3\n"
    assert store.read("catalog") == b"version: 2\n"
    store.rollback("catalog")
    assert store.read("catalog") == seed
    with pytest.raises(CabinetError, match="no earlier version"):
        store.rollback("catalog")
    assert store.read("catalog") == seed
    undone = sorted((store.root / "history" / "catalog" / "undone").iterdir())
    assert [p.read_bytes() for p in undone] == [b"version: 2\n", b"version: 3\n"]


def test_the_seed_file_changing_later_does_not_change_what_is_in_force(tmp_path):
    store = _store(tmp_path)
    store.apply("planogram", b"mine\n")
    store.rollback("planogram")
    (tmp_path / "seeds" / "planogram.yaml").write_bytes(b"edited behind our back\n")
    assert store.read("planogram") == (FIXTURES / "planogram.yaml").read_bytes()


def test_a_crash_between_the_temporary_write_and_the_rename_leaves_the_old_file_whole(tmp_path):
    store = _store(tmp_path)
    store.apply("planogram", b"old planogram\n" * 100)
    target = store.root / "planogram.yaml"

    def rename(src, dst):
        if Path(dst) == target:
            assert Path(src).read_bytes() == b"new\n"   # the new bytes were fully written
            raise Crash()
        os.replace(src, dst)

    crashing = _store(tmp_path, rename=rename)
    with pytest.raises(Crash):
        crashing.apply("planogram", b"new\n")
    after = _store(tmp_path)   # the restarted cabinet
    assert after.read("planogram") == b"old planogram\n" * 100
    # Repeating the apply finishes it, without a second copy of the old version in history.
    after.apply("planogram", b"new\n")
    assert after.read("planogram") == b"new\n"
    tops = [p.read_bytes() for p in after.history("planogram")]
    assert tops == [(FIXTURES / "planogram.yaml").read_bytes(), b"old planogram\n" * 100]
    after.rollback("planogram")
    assert after.read("planogram") == b"old planogram\n" * 100


def test_a_rollback_cut_after_the_rename_is_finished_by_the_next_one(tmp_path):
    store = _store(tmp_path)
    store.apply("catalog", b"two\n")
    store.apply("catalog", b"three\n")
    # The state a crash leaves between putting `two` back and dropping it from the history:
    atomic_write(store.root / "catalog.yaml", b"two\n")
    assert store.previous("catalog") == (FIXTURES / "catalog.yaml").read_bytes()
    store.rollback("catalog")
    assert store.read("catalog") == (FIXTURES / "catalog.yaml").read_bytes()
    assert store.history("catalog") == []


def test_atomic_write_replaces_the_whole_file(tmp_path):
    path = tmp_path / "f.yaml"
    atomic_write(path, b"a" * 10000)
    atomic_write(path, b"b")
    assert path.read_bytes() == b"b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.yaml"]


def test_an_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown kind 'stock'"):
        _store(tmp_path).read("stock")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.sampled_from([b"a\n", b"b\n", b"c\n"]), st.none()), max_size=12))
def test_any_run_of_applies_and_rollbacks_walks_back_through_what_was_in_force(steps):
    """Model: the versions put in force, newest last; a rollback goes back to the newest one
    that differs from the file in force (re-applying the same bytes is no new version)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = _store(Path(tmp))
        versions = [store.read("catalog")]
        for data in steps:
            if data is not None:
                store.apply("catalog", data)
                versions.append(data)
                continue
            current = versions[-1]
            while versions and versions[-1] == current:
                versions.pop()
            if not versions:
                with pytest.raises(CabinetError, match="no earlier version"):
                    store.rollback("catalog")
                versions = [current]
            else:
                store.rollback("catalog")
            assert store.read("catalog") == versions[-1]
        assert store.read("catalog") == versions[-1]
