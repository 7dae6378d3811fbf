"""Where photos are found: $CABINET_DATA or ../shared/data, else the set-up fallback faces."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vision import data
from vision.sim.render import ProductLook, render_cell


def touch_photo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8))
    return path


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """A fake checkout at tmp/work/main, with no shared data beside it unless a test adds it."""
    monkeypatch.delenv("CABINET_DATA", raising=False)
    root = tmp_path / "work" / "main"
    root.mkdir(parents=True)
    return root


def test_data_root_defaults_beside_the_repo_and_follows_the_environment(repo, monkeypatch, tmp_path):
    assert data.data_root(repo_root=repo) == tmp_path / "work" / "shared" / "data"
    monkeypatch.setenv("CABINET_DATA", str(tmp_path / "elsewhere"))
    assert data.data_root(repo_root=repo) == tmp_path / "elsewhere"


def test_faces_come_from_shared_data_first(repo, tmp_path):
    touch_photo(tmp_path / "work" / "shared" / "data" / "faces" / "ann" / "01.jpg")
    touch_photo(repo / ".cache" / "faces" / "obama" / "01_obama.jpg")
    assert data.faces_root(repo_root=repo) == tmp_path / "work" / "shared" / "data" / "faces"


def test_fallback_faces_when_shared_data_is_absent(repo):
    assert data.faces_root(repo_root=repo) is None
    touch_photo(repo / ".cache" / "faces" / "obama" / "01_obama.jpg")
    touch_photo(repo / ".cache" / "faces" / "biden" / "01_biden.jpg")
    root = data.faces_root(repo_root=repo)
    assert root == repo / ".cache" / "faces"
    assert sorted(data.people(root)) == ["biden", "obama"]


def test_an_empty_shared_faces_folder_does_not_hide_the_fallback(repo, tmp_path):
    (tmp_path / "work" / "shared" / "data" / "faces").mkdir(parents=True)
    touch_photo(repo / ".cache" / "faces" / "obama" / "01_obama.jpg")
    assert data.faces_root(repo_root=repo) == repo / ".cache" / "faces"


def test_people_are_sorted_and_group_photos_kept_apart(tmp_path):
    faces = tmp_path / "faces"
    for name in ("zoe/02_b.png", "zoe/01_a.jpg", "ann/01.JPG", "_group/01_two.jpg"):
        touch_photo(faces / name)
    (faces / "zoe" / "notes.txt").write_text("not a photo")
    (faces / "empty").mkdir()
    found = data.people(faces)
    assert list(found) == ["ann", "zoe"]
    assert [p.name for p in found["zoe"]] == ["01_a.jpg", "02_b.png"]
    assert [p.name for p in data.group_photos(faces)] == ["01_two.jpg"]
    assert data.people(tmp_path / "nowhere") == {}


def test_product_image_is_the_iconic_packshot_or_none(tmp_path):
    shot = touch_photo(tmp_path / "products" / "grocery" / "Oat-Milk" / "iconic.jpg")
    assert data.product_image("Oat-Milk", root=tmp_path) == shot
    assert data.product_image("Rice-Milk", root=tmp_path) is None
    assert data.product_image("../grocery", root=tmp_path) is None


def test_shared_packshots_are_found_and_drawn(shared_data):
    path = data.product_image("Oatly-Oat-Milk", root=shared_data)
    assert path is not None and path.name == "iconic.jpg"
    assert path == shared_data / "products" / "grocery" / "Oatly-Oat-Milk" / "iconic.jpg"
    cell = render_cell(ProductLook("oatly", "Oatly", (200, 200, 200), path, "carton"), (80, 160))
    plain = render_cell(ProductLook("oatly", "Oatly", (200, 200, 200), None, "carton"), (80, 160))
    assert cell.shape == (160, 80, 3) and cell.std() > 20
    # the packshot, not the plain carton in the look's colour, fills the body
    assert np.abs(cell.astype(int) - plain.astype(int)).mean() > 15
