"""JSON Schemas for nurture.yaml, workflow and segment files, generated from the models that
validate them, so an editor (the YAML language server) flags what `nurture validate` would."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

from nurture.config import Settings
from nurture.durations import format_duration
from nurture.segments import Segment
from nurture.workflows import Workflow

FILES: dict[str, tuple[type[BaseModel], str]] = {
    "nurture.schema.json": (Settings, "nurture project settings (nurture.yaml)"),
    "workflow.schema.json": (Workflow, "nurture workflow (workflows/*.yaml)"),
    "segment.schema.json": (Segment, "nurture segment (segments/*.yaml)"),
}


class _Generator(GenerateJsonSchema):
    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, timedelta):
            return format_duration(dft)
        return super().encode_default(dft)


def schemas() -> dict[str, dict[str, Any]]:
    out = {}
    for name, (model, title) in FILES.items():
        schema = model.model_json_schema(schema_generator=_Generator)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = title
        out[name] = schema
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = directory / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


def stale(directory: Path) -> list[str]:
    """Schema files in `directory` that differ from what the models generate."""
    return [
        name
        for name, schema in schemas().items()
        if not (directory / name).is_file()
        or (directory / name).read_text(encoding="utf-8") != render(schema)
    ]
