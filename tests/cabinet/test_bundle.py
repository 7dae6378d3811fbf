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
     r"cam_top_after.png: missing \(named by bundle.json cameras.cam_top.after\)"),
    (lambda p: (p / "images" / "cam_top_after.png").write_bytes(b"\x89PNG garbage"),
     r"cam_top_after.png: changed since the session: its sha256 differs from bundle.json "
     r"files.images/cam_top_after.png"),
    (lambda p: (p / "calibration" / "cam_top_full.png").unlink(),
     r"cam_top_full.png: missing \(named by bundle.json calibration.cameras.cam_top.full\)"),
    (lambda p: (p / "planogram.yaml").write_text("cabinet_id: [\n"),
     r"planogram.yaml: changed since the session"),
    # a bundle without file hashes (another program may write none): the damage itself is named
    (lambda p: (_edit(p, lambda d: d.update(files={})),
                (p / "images" / "cam_top_after.png").write_bytes(b"\x89PNG garbage")),
     r"cam_top_after.png: image is damaged"),
    (lambda p: (_edit(p, lambda d: d.update(files={})),
                (p / "planogram.yaml").write_text("cabinet_id: [\n")),
     r"planogram copy is bad: .*planogram.yaml:\d+: malformed YAML"),
    (lambda p: _edit(p, lambda d: d["shelves"]["top"].update(before_g="heavy")),
     r"bundle.json: shelves.top.before_g = 'heavy': Input should be a valid number"),
    # numbers only: a numeric string, a boolean, NaN or a load far below zero is refused
    (lambda p: _edit(p, lambda d: d["shelves"]["top"].update(after_g="5012.5")),
     r"bundle.json: shelves.top.after_g = '5012.5': Input should be a valid number"),
    (lambda p: _edit(p, lambda d: d["shelves"]["middle"].update(before_g=-800.0)),
     r"bundle.json: shelves.middle.before_g = -800.0: Input should be greater than or equal "
     r"to -50"),
    (lambda p: _edit(p, lambda d: d["shelves"]["top"]["samples_after"].__setitem__(3, float("nan"))),
     r"bundle.json: shelves.top.samples_after.3 = nan: Input should be a finite number"),
    (lambda p: _edit(p, lambda d: d["shelves"]["top"].update(after_stable=1)),
     r"bundle.json: shelves.top.after_stable = 1: Input should be a valid boolean"),
    (lambda p: _edit(p, lambda d: d["cameras"].update(cam_attic={"before": None, "after": None})),
     r"bundle.json: cameras.cam_attic: not a camera of the bundle's planogram"),
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


def test_interrupted_bundle_is_refused_by_reconcile(tmp_path, world_files):
    from cabinet.reconcile import reconcile
    world = World(*world_files, seed=3)
    w = BundleWriter(tmp_path, "cut")
    w.write_context(FIXTURES / "planogram.yaml", FIXTURES / "catalog.yaml", "a")
    w.write_before(world.readings(1.0), {}, world.inventory())
    b = load_bundle(w.path)  # readable, as the controller's recovery needs it
    assert not b.complete
    with pytest.raises(BundleError, match=r"cut/bundle.json: interrupted: the bundle has no "
                       r"after-snapshot \(closed_at is null\)"):
        reconcile(b)


def test_calibration_and_hashes_travel_with_the_bundle(tmp_path, world_files):
    path, _ = _bundle(tmp_path, world_files)
    raw = json.loads((path / "bundle.json").read_text())
    assert raw["schema_version"] == 2 and raw["recognizer"] is None
    assert raw["calibration"]["cameras"]["cam_top"] == {"empty": "calibration/cam_top_empty.png",
                                                        "full": "calibration/cam_top_full.png"}
    import hashlib
    assert sorted(raw["files"]) == sorted(
        ["catalog.yaml", "planogram.yaml"]
        + [f"images/{c}_{s}.png" for c in ("cam_top", "cam_middle", "cam_bottom")
           for s in ("before", "after")]
        + [f"calibration/{c}_{s}.png" for c in ("cam_top", "cam_middle", "cam_bottom")
           for s in ("empty", "full")])
    for name, digest in raw["files"].items():
        assert hashlib.sha256((path / name).read_bytes()).hexdigest() == digest
    b = load_bundle(path)
    cal = b.calibration["cam_top"]
    assert cal.empty.shape == (480, 640, 3) and cal.full.shape == (480, 640, 3)
    assert not np.array_equal(cal.empty, cal.full)


def test_a_bundle_naming_a_model_needs_that_model(tmp_path, world_files):
    from cabinet.reconcile import reconcile
    path, _ = _bundle(tmp_path, world_files, images=False)
    _edit(path, lambda d: d.update(recognizer={"version": "abc123def4567890"}))
    b = load_bundle(path)
    with pytest.raises(BundleError, match=r"recognizer: model abc123def4567890 not found: "
                       r"install models/ at that version or pass --model"):
        reconcile(b)

    class Other:
        version = "0000111122223333"
    with pytest.raises(BundleError, match=r"read with model abc123def4567890, the one given "
                       r"is 0000111122223333"):
        reconcile(b, recognizer=Other())


def test_a_bundle_written_by_another_program_is_reconciled(tmp_path):
    """Plain json and numpy, following docs/session-bundle.md: no cabinet code writes it."""
    rng = np.random.default_rng(5)
    d = tmp_path / "foreign-1"
    d.mkdir()
    for name in ("catalog.yaml", "planogram.yaml"):
        (d / name).write_bytes((FIXTURES / name).read_bytes())
    # the demo planogram's stock; a water (559 g) taken from the top shelf
    loads = {"top": 9000.0, "middle": 11000.0, "bottom": 7000.0}
    after = dict(loads, top=loads["top"] - 561.3)
    shelves = {}
    for i, shelf in enumerate(("top", "middle", "bottom")):
        sb = loads[shelf] + rng.normal(0, 2.0, 12)
        sa = after[shelf] + rng.normal(0, 2.0, 12)
        shelves[shelf] = {"channel": i, "before_g": float(np.median(sb)),
                          "after_g": float(np.median(sa)), "before_stable": True,
                          "after_stable": True, "samples_before": sb.tolist(),
                          "samples_after": sa.tolist()}
    (d / "bundle.json").write_text(json.dumps({
        "schema_version": 2, "session_id": "foreign-1", "cabinet_id": "demo-cabinet-1",
        "opened_at": "2026-11-29T10:00:00+00:00", "closed_at": "2026-11-29T10:00:20+00:00",
        "shelves": shelves}))
    from cabinet.reconcile import reconcile
    r = reconcile(load_bundle(d))
    assert r.basket == {"water-500": 1} and r.flags == ()
    assert r.evidence["shelves"]["top"]["explained_by"] == {"water-500": -1}


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="no such session bundle"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(BundleError, match="cannot name a directory"):
        BundleWriter(tmp_path, "../escape")
    assert not os.path.exists(tmp_path.parent / "escape")


def test_the_same_bundle_gives_the_same_answer_without_the_shared_photos(tmp_path, world_files,
                                                                         monkeypatch):
    """A bundle replays anywhere: nothing reconcile reads lies outside it (issue 7: the same
    bundle read with and without ../shared/data once gave different baskets)."""
    from cabinet.reconcile import reconcile
    world = World(*world_files, seed=4)
    path = write_session(tmp_path, "s-9", world, lambda w: (w.take("B1"), w.move("A1", "A2")),
                         with_images=True)
    here = reconcile(load_bundle(path)).to_json()
    moved = tmp_path / "elsewhere" / "s-9"
    import shutil
    shutil.copytree(path, moved)
    monkeypatch.setenv("CABINET_DATA", str(tmp_path / "no-shared-data"))
    there = reconcile(load_bundle(moved))
    assert there.to_json() == here and there.basket == {"orange-juice-1l": 1} == world.basket()


def test_the_writer_keeps_the_pixels_it_encoded_and_a_load_takes_them(tmp_path, world_files):
    """load_bundle(known=) takes an image only where bundle.json records its sha256: the
    controller's own load then decodes no PNG and still reads exactly what is stored."""
    world = World(*world_files, seed=5)
    w = BundleWriter(tmp_path, "s-known")
    w.write_context(FIXTURES / "planogram.yaml", FIXTURES / "catalog.yaml", "a")
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    w.write_before(world.readings(1.0), {"cam_top": frame}, world.inventory())
    with pytest.raises(BundleError, match="write_before\\(\\) must come before the after images"):
        _no_before_after_images(tmp_path)
    w.write_after_images({"cam_top": frame[::-1].copy()})
    assert load_bundle(w.path).complete is False          # interrupted until the weights come
    w.write_after(world.readings(1.0), {})
    name = "images/cam_top_before.png"
    digest, kept = w.decoded[name]
    from_disk = load_bundle(w.path)
    assert np.array_equal(from_disk.images["cam_top"].before, kept)   # lossless: the same pixels
    assert from_disk.decoded[name][0] == digest
    with pytest.raises(ValueError):
        kept[0, 0, 0] = 1                                  # shared, so never changed
    fast = load_bundle(w.path, known=w.decoded)
    assert fast.images["cam_top"].before is kept           # taken, not decoded again
    # a stale entry (another sha256) is not taken: the file is decoded
    stale = {name: ("0" * 64, np.zeros_like(kept))}
    again = load_bundle(w.path, known=stale)
    assert np.array_equal(again.images["cam_top"].before, from_disk.images["cam_top"].before)


def _no_before_after_images(tmp_path):
    w = BundleWriter(tmp_path, "s-empty")
    w.write_context(FIXTURES / "planogram.yaml", FIXTURES / "catalog.yaml", "a")
    w.write_after_images({})


def test_a_load_takes_the_parsed_catalog_and_planogram_only_for_the_same_bytes(tmp_path):
    from cabinet.catalog import load_catalog
    from cabinet.planogram import load_planogram
    catalog = load_catalog(FIXTURES / "catalog.yaml")
    planogram = load_planogram(FIXTURES / "planogram.yaml", catalog)
    w = BundleWriter(tmp_path, "s-parsed")
    w.write_context(FIXTURES / "planogram.yaml", FIXTURES / "catalog.yaml", "a",
                    planogram=planogram, catalog=catalog)
    fast = load_bundle(w.path, known=w.decoded)
    assert fast.catalog is catalog and fast.planogram is planogram
    assert load_bundle(w.path, known=fast.decoded).planogram is planogram
    # another catalog's bytes: parsed from the bundle's copy, not taken
    stale = dict(w.decoded, **{"catalog.yaml": ("0" * 64, catalog)})
    slow = load_bundle(w.path, known=stale)
    assert slow.catalog is not catalog and slow.planogram is not planogram
    assert slow.planogram.cabinet_id == planogram.cabinet_id
