"""The plan schema as JSON Schema, so editors can autocomplete and check plans as ops staff type."""

from __future__ import annotations

from typing import Any

from .plan import Plan

SCHEMA_ID = "https://github.com/voicebot/voicebot/dialplan.schema.json"


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a dialog plan file."""
    schema = Plan.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "voicebot dialog plan", **schema}
