"""The session bundle: written step by step, atomically, read back identically; a damaged
bundle is a clear error naming the file."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from cabinet.bundle import BundleWriter, atomic_write, load_bundle
from cabinet.errors import BundleError, FormatError

from test_bundle_synth import FIXTURES, World, demo_files, write_session


@pytest.fixture(scope="module")
def world_files():
    return demo_files()


def _bundle(tmp_path: Path, world_files, images: bool = True) -> tuple[Path, World]:
    world = World(*world_files, seed=3)
    path = write_session(tmp_path, "s-001", world, lambda w: w.take("A1"), with_images=images)
    return path, world


def test_round_trip(tmp_path, world_files):
    path, world = _bundle(tmp_path, world_files)
    b = load_bundle(path)
    assert b.session_id == "s-001" and b.record.cabinet_id == "demo-cabinet-1"
    assert b.record.account_id == "acc-test" and b.record.closed_at.endswith("+00:00")
    assert (path / "catalog.yaml").read_bytes() == (FIXTURES / "catalog.yaml").read_bytes()
    assert set(b.shelves) == {"top", "middle", "bottom"} and b.shelves["middle"].channel == 1
    top = b.shelves["top"]
    assert top.before_g - top.after_g == pytest.approx(342, abs=20) and top.after_stable
    assert len(top.samples_before) == 20
    assert b.inventory_before["A1"] == ("cola-330",) * 5
    img = b.images["cam_top"]
    assert img.before.shape == (480, 640, 3) and img.before.dtype == np.uint8
    assert not np.array_equal(img.before, img.after)
    raw = json.loads((path / "bundle.json").read_text())
    assert raw["cameras"]["cam_top"] == {"before": "images/cam_top_before.png",
                                         "after": "images/cam_top_after.png"}


def test_before_snapshot_is_never_replaced(tmp_path, world_files):
    path, _ = _bundle(tmp_path, world_files, images=False)
    before = (path / "bundle.json").read_text()
    writer = BundleWriter(tmp_path, "s-001")  # re-opened, as after a restart
    with pytest.raises(BundleError, match="before-snapshot is already written"):
        writer.write_before({"top": (1.0, True, [])}, {}, {})
    assert (path / "bundle.json").read_text() == before
    writer.write_result({"basket": {}})
    assert json.loads((path / "result.json").read_text()) == {"basket": {}}
    assert load_bundle(path).result == {"basket": {}}


def test_order_is_enforced(tmp_path):
    w = BundleWriter(tmp_path, "s-2")
    with pytest.raises(BundleError, match="write_context"):
        w.write_before({}, {}, {})
    w.write_context(FIXTURES / "planogram.yaml", FIXTURES / "catalog.yaml", None)
    with pytest.raises(BundleError, match="write_before"):
        w.write_after({}, {})
    with pytest.raises(BundleError, match="shelf 'attic'"):
        w.write_before({"attic": (1.0, True, [])}, {}, {})


def test_bad_context_writes_nothing(tmp_path):
    w = BundleWriter(tmp_path, "s-3")
    with pytest.raises(FormatError, match="planogram_unknown_sku.yaml:9"):
        w.write_context(FIXTURES / "bad" / "planogram_unknown_sku.yaml",
                        FIXTURES / "catalog.yaml", "a")
    assert list((tmp_path / "s-3").iterdir()) == []


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "f.json"
    atomic_write(target, b"old")

    with pytest.raises(TypeError):
        atomic_write(target, object())  # type: ignore[arg-type]  # fails mid-write
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temporary left behind


@pytest.mark.parametrize("damage,message", [
    (lambda p: (p / "bundle.json").unlink(), r"bundle.json: missing"),
    (lambda p: (p / "bundle.json").write_text("{not json"), r"bundle.json: damaged JSON"),
    (lambda p: (p / "images" / "cam_top_after.png").unlink(),
     r"cam_top_after.png: image named in bundle.json is missing"),
    (lambda p: (p / "images" / "cam_top_after.png").write_bytes(b"\x89PNG garbage"),
     r"cam_top_after.png: image is damaged"),
    (lambda p: (p / "planogram.yaml").write_text("cabinet_id: [\n"),
     r"planogram copy is bad: .*planogram.yaml:\d+: malformed YAML"),
    (lambda p: _edit(p, lambda d: d["shelves"]["top"].update(before_g="heavy")),
     r"bundle.json: shelves.top.before_g"),
    (lambda p: _edit(p, lambda d: d["inventory_before"].update(A1=["caviar"])),
     r"inventory_before.A1: SKU 'caviar'"),
    (lambda p: _edit(p, lambda d: d.update(surprise=1)), r"bundle.json: surprise"),
])
def test_damaged_bundle_names_the_file(tmp_path, world_files, damage, message):
    path, _ = _bundle(tmp_path, world_files)
    damage(path)
    with pytest.raises(BundleError, match=message):
        load_bundle(path)


def _edit(path: Path, change) -> None:
    data = json.loads((path / "bundle.json").read_text())
    change(data)
    (path / "bundle.json").write_text(json.dumps(data))


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="no such session bundle"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(BundleError, match="cannot name a directory"):
        BundleWriter(tmp_path, "../escape")
    assert not os.path.exists(tmp_path.parent / "escape")
