"""The product recognizer in the live cabinet (issue 7): `cabinet run` and `cabinet demo` take
it from the configuration's `recognizer:` key (default: the committed models/ when present),
a bad folder is refused naming the key, none is said in the log and /healthz; and a crop too
small to name gets no answer, so the cell is unknown instead of a foreign object that spoils
the basket (the session bench's 7 of 12 sessions, docs/vision.md "In the live cabinet")."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from cabinet.app import App, validate
from cabinet.config import load_config
from cabinet.demo import DEFAULT_CONFIG, as_expected
from cabinet.errors import CabinetError, ConfigError
from vision.diff import UNKNOWN, ShelfDiff
from vision.recognizer import DEFAULT_MODEL_DIR, Recognizer

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"


def write_config(folder: Path, **changes) -> Path:
    """fixtures/cabinet.yaml with absolute file paths, data under `folder`, no accounts or
    scenarios (no faces to encode), and `changes`."""
    data = yaml.safe_load((FIXTURES / "cabinet.yaml").read_text())
    for key in ("catalog", "planogram"):
        data[key] = str(FIXTURES / data[key])
    data["accounts"] = data["scenarios"] = None
    data["data_dir"] = str(folder / "data")
    data["database_url"] = f"sqlite:///{folder / 'data' / 'cabinet.sqlite'}"
    data.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cabinet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def started():
    apps: list[App] = []

    def start(config: Path, **kwargs) -> App:
        app = App(config, **kwargs)
        apps.append(app)
        return app.start()
    yield start
    for app in reversed(apps):
        app.close()


def copy_models(dst: Path) -> Path:
    shutil.copytree(DEFAULT_MODEL_DIR, dst, ignore=shutil.ignore_patterns("holdout"))
    return dst


# --- the configuration key --------------------------------------------------------------------

def test_the_key_names_the_model_folder_relative_to_the_configuration(tmp_path, started):
    folder = tmp_path / "site"
    models = copy_models(folder / "my-models")
    app = started(write_config(folder, recognizer="my-models"))
    rec = app.controller.recognizer
    assert rec is not None and rec.model_dir == models
    assert rec.version == Recognizer.load(models).version
    # the recognizer the controller holds is the one every session bundle will name
    assert app.recognizer is rec


def test_none_turns_it_off_although_models_are_committed(tmp_path, started, caplog):
    assert (DEFAULT_MODEL_DIR / "card.json").is_file()
    with caplog.at_level(logging.INFO, logger="cabinet.app"):
        app = started(write_config(tmp_path, recognizer="none"))
    assert app.controller.recognizer is None
    assert any("product recognizer: none (recognizer: none" in r.getMessage()
               for r in caplog.records)


def test_absent_key_takes_the_committed_models(tmp_path, started):
    app = started(write_config(tmp_path))
    assert app.controller.recognizer is not None
    assert app.controller.recognizer.model_dir == DEFAULT_MODEL_DIR


def test_absent_key_without_models_runs_without_and_says_so(tmp_path, started, caplog):
    from cabinet.runner import Runner
    empty = tmp_path / "no-models"
    empty.mkdir()
    with caplog.at_level(logging.INFO, logger="cabinet.app"):
        app = started(write_config(tmp_path / "site"), default_models=empty)
    assert app.controller.recognizer is None
    said = [r.getMessage() for r in caplog.records if "product recognizer" in r.getMessage()]
    assert said and "none" in said[0] and str(empty) in said[0]
    assert Runner(app, environ={}).health()["recognizer"] is None
    with_models = started(write_config(tmp_path / "site2"))
    assert Runner(with_models, environ={}).health()["recognizer"] == \
        with_models.controller.recognizer.version


def test_a_folder_that_is_not_there_is_refused_naming_key_and_path(tmp_path):
    config = write_config(tmp_path, recognizer="nowhere/models")
    with pytest.raises(ConfigError) as e:
        validate(config)
    text = str(e.value)
    assert "recognizer" in text and str(tmp_path / "nowhere" / "models") in text
    # and `cabinet run` refuses it before writing anything
    with pytest.raises(ConfigError):
        App(config).start()
    assert not (tmp_path / "data").exists()


def test_a_folder_without_a_model_card_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as e:
        validate(write_config(tmp_path, recognizer="empty"))
    assert "recognizer" in str(e.value) and "no card.json" in str(e.value)


def test_a_model_that_does_not_match_its_card_stops_the_start_naming_the_key(tmp_path):
    models = copy_models(tmp_path / "models")
    data = bytearray((models / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (models / "model.onnx").write_bytes(bytes(data))
    config = write_config(tmp_path, recognizer="models")
    validate(config)            # the folder and its card are there: the cheap check passes
    with pytest.raises(CabinetError) as e:
        App(config).start()
    assert "recognizer = models" in str(e.value) and "corrupt" in str(e.value)


# --- crops too small to name ------------------------------------------------------------------

def _val_photo(root: Path) -> np.ndarray:
    photo = sorted((root / "products" / "grocery" / "Bravo-Orange-Juice").glob("val_*"))[0]
    return cv2.imread(str(photo))


def _shrunk(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    f = side / min(h, w)
    return cv2.resize(img, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)


def test_a_crop_under_the_smallest_side_gets_no_answer(shared_data):
    rec = Recognizer.load()
    photo = _val_photo(shared_data)
    small, big = _shrunk(photo, rec.min_crop_px - 1), _shrunk(photo, rec.min_crop_px)
    answers = rec.classify([small, big, small], top_k=3)
    assert answers[0] == [] and answers[2] == []
    assert len(answers[1]) == 3 and answers[1][0][1] >= answers[1][1][1]
    # a big crop still gets the same answer as alone (the small ones do not shift it)
    assert rec.classify([big], top_k=3)[0] == answers[1]


class _Silent:
    """A recognizer with no answer for any crop (as for crops too small to name)."""

    def classify(self, crops, top_k=3):
        return [[] for _ in crops]


def test_a_cell_without_an_answer_is_unknown_not_foreign():
    reader = ShelfDiff(_Silent(), sku_of={"Bravo-Orange-Juice": "orange-juice-1l"})
    assert reader._label(()) == (UNKNOWN, 0.0)
    assert reader._label((("Bravo-Orange-Juice", 0.9), ("Arla-Sour-Cream", 0.05))) == \
        ("orange-juice-1l", 1.0)


# --- the basket with the recognizer on ----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("calibrated", [True, False])
def test_live_basket_with_the_recognizer_is_the_scenario_basket(make_cabinet, shared_data,
                                                                calibrated):
    """The demo's first two customers (one can; three items on three shelves) with the
    committed recognizer on. Calibrated, before the fix: cells of untouched shelves read as
    foreign objects, nothing or part charged. Uncalibrated, before the fix: no cell was looked
    at, yet the reader was fully sure nothing changed (confidence 1), so every take disagreed
    with vision and nothing was charged."""
    import asyncio
    cfg = load_config(DEFAULT_CONFIG).model_copy(update={"recognizer": str(DEFAULT_MODEL_DIR)})
    cab = make_cabinet(config=cfg)
    assert cab.controller.recognizer is not None
    if calibrated:
        from cabinet.bench import calibrate
        cab.controller.shelf_calibration = calibrate(cab, cab.workdir / "calibration")
    assert (cab.controller.shelf_calibration is not None) == calibrated
    scenarios = [s for s in cab.scenarios if s.name in ("single-purchase", "multi-item")]
    assert len(scenarios) == 2

    async def main():
        return [(s, (await cab.run_scenario(s))[0]) for s in scenarios]
    for scenario, report in asyncio.run(main()):
        assert as_expected(report, scenario), (scenario.name, report and report.basket,
                                               report and report.flags)
        assert "foreign_object" not in report.flags and "vision_disagrees" not in report.flags
