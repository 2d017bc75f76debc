"""The JSON Schemas editors use agree with the validator: same files accepted, same refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from nurture.cli import main
from nurture.config import Settings, condition_context
from nurture.workflows import Workflow

REPO = Path(__file__).resolve().parents[1]


def schema(name: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads((REPO / "schema" / name).read_text()))


def settings_ok(data: Any) -> bool:
    try:
        Settings.model_validate(data, context=condition_context(data))
    except ValueError:
        return False
    return True


def workflow_ok(data: Any) -> bool:
    try:
        Workflow.model_validate(data)
    except ValueError:
        return False
    return True


EXAMPLE_SETTINGS = yaml.safe_load((REPO / "nurture.yaml").read_text())
EXAMPLE_WORKFLOW = yaml.safe_load((REPO / "workflows" / "guide-nurture.yaml").read_text())


def changed(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(base))
    *parents, last = path.split(".")
    target = data
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if value is KeyError:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return data


def test_committed_schemas_are_up_to_date() -> None:
    result = CliRunner().invoke(main, ["--project", str(REPO), "schema", "--check"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("caps.min_gap", "2d"),
        ("caps.min_gap", 3),
        ("caps.quiet_hours", None),
        ("caps.weekdays", ["sat", "sun"]),
        ("timezone", "Asia/Kolkata"),
    ],
)
def test_both_accept_good_settings(path: str, value: Any) -> None:
    data = changed(EXAMPLE_SETTINGS, path, value)
    assert settings_ok(data)
    assert list(schema("nurture.schema.json").iter_errors(data)) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("unknown_setting", 1),
        ("caps.per_day", 0),
        ("caps.per_week", "three"),
        ("caps.min_gap", "20 hours"),
        ("caps.quiet_hours", "7pm-8am"),
        ("caps.weekdays", ["monday"]),
        ("caps.weekdays", []),
        ("caps.max_per_hour", 2),
        ("sender", KeyError),
        ("sender.from_address", "not an address"),
        ("stages.0.phase", "awareness"),
        ("stages.0.name", "Lead Stage"),
        ("base_url", "ftp://example.com"),
        ("scoring.engagement.half_life", "a month"),
        ("delivery", {"pool": 0}),
        ("delivery", {"smtp_url": "http://mail.example.com"}),
    ],
)
def test_both_refuse_broken_settings(path: str, value: Any) -> None:
    data = changed(EXAMPLE_SETTINGS, path, value)
    assert not settings_ok(data)
    assert list(schema("nurture.schema.json").iter_errors(data)) != []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("tracks.discovery.1.wait", 5),
        ("tracks.discovery.1.wait", "1d12h"),
        ("goals", KeyError),
        ("description", KeyError),
    ],
)
def test_both_accept_good_workflows(path: str, value: Any) -> None:
    data = changed(EXAMPLE_WORKFLOW, path, value)
    assert workflow_ok(data)
    assert list(schema("workflow.schema.json").iter_errors(data)) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("name", KeyError),
        ("enter", {}),
        ("enter.cohort", "vip"),
        ("tracks.awareness", []),
        ("tracks.discovery.1.wait", "soon"),
        ("tracks.discovery.1.delay", "1d"),
        ("tracks.discovery.0.content", 12),
        ("caps", {"per_day": 0}),
        ("goals.events", "meeting_booked"),
    ],
)
def test_both_refuse_broken_workflows(path: str, value: Any) -> None:
    data = changed(EXAMPLE_WORKFLOW, path, value)
    assert not workflow_ok(data)
    assert list(schema("workflow.schema.json").iter_errors(data)) != []


def test_every_example_file_points_editors_at_its_schema() -> None:
    assert (
        (REPO / "nurture.yaml")
        .read_text()
        .startswith("# yaml-language-server: $schema=schema/nurture.schema.json")
    )
    for path in (REPO / "workflows").glob("*.yaml"):
        assert path.read_text().startswith(
            "# yaml-language-server: $schema=../schema/workflow.schema.json"
        )
        data = yaml.safe_load(path.read_text())
        assert workflow_ok(data) and list(schema("workflow.schema.json").iter_errors(data)) == []
