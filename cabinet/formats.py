"""The JSON Schemas of the user-facing formats, generated from the pydantic models.

The models in catalog.py, planogram.py, scenario.py, config.py and bundle.py are the one source
of truth; `python -m cabinet.formats` regenerates cabinet/schemas/*.schema.json (shipped as
package data and linked from docs/formats.md), and a test fails when the shipped files drift.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cabinet import bundle, catalog, config, planogram, scenario

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
BASE_URI = "https://cabinet.invalid/schemas/"


def _scenarios_schema() -> dict[str, Any]:
    schema = scenario.ScenariosFile.model_json_schema()
    steps: list[dict[str, Any]] = []
    for kind, model in scenario._STEP_PARAMS.items():
        if model is None:
            steps.append({"const": kind})
            steps.append({"type": "object", "additionalProperties": False, "required": [kind],
                          "properties": {kind: {"type": ["object", "null"], "maxProperties": 0}}})
            continue
        params = model.model_json_schema()
        params.pop("title", None)
        alt = [params]
        if kind == "take":
            alt.append({"type": "string", "description": "slot id, qty 1"})
        if kind == "wait":
            alt.append({"type": "number", "minimum": 0})
        steps.append({"type": "object", "additionalProperties": False, "required": [kind],
                      "properties": {kind: {"anyOf": alt}}})
    schema["$defs"]["ScenarioModel"]["properties"]["actions"]["items"] = {"oneOf": steps}
    return schema


def schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema (draft 2020-12)."""
    cfg = config.Config.model_json_schema()
    cfg["properties"].pop("source", None)
    out = {
        "catalog.schema.json": catalog.CatalogModel.model_json_schema(),
        "planogram.schema.json": planogram.PlanogramModel.model_json_schema(),
        "scenarios.schema.json": _scenarios_schema(),
        "accounts.schema.json": scenario.AccountsFile.model_json_schema(),
        "config.schema.json": cfg,
        "bundle.schema.json": bundle.BundleRecord.model_json_schema(),
    }
    for name, schema in out.items():
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = BASE_URI + name
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = directory / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


def load_schema(name: str) -> dict[str, Any]:
    """A shipped schema by file name, e.g. `load_schema("catalog.schema.json")`."""
    return json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))


if __name__ == "__main__":
    for p in write_schemas():
        print(p, file=sys.stdout)
