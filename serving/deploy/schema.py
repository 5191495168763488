"""The ``settings`` part of the chart's ``values.schema.json``, generated from the settings tree.

Pydantic gives the shape (types, bounds, unknown keys refused); :func:`settings_schema` adds the
cross-field rules JSON Schema can say (TP must divide the preset's attention heads, pipeline
parallel excludes MTP) and the chart's own limits (no secrets in values, a fixed engine port).
Rules it cannot say (min ≤ max replicas, …) run in Python when the app is built at deploy time.
``serving deploy schema --write`` refreshes the file; a test fails when it drifts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from serving.config import PRESETS, Settings
from serving.deploy.paths import CHART_DIR

SCHEMA_FILE = CHART_DIR / "values.schema.json"
_DROP = {"format", "writeOnly", "title"}


def _clean(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _clean(v) for k, v in node.items() if k not in _DROP}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


def _tp_rules() -> list[dict[str, Any]]:
    by_heads: dict[int, list[str]] = {}
    choices: dict[int, list[int]] = {}
    for name, preset in PRESETS.items():
        by_heads.setdefault(preset.attention_heads, []).append(name)
        choices[preset.attention_heads] = preset.tp_choices
    rules = []
    for heads, names in sorted(by_heads.items()):
        rules.append(
            {
                "if": {
                    "properties": {"model": {"properties": {"preset": {"enum": names}}, "required": ["preset"]}},
                    "required": ["model"],
                },
                "then": {
                    "properties": {
                        "parallelism": {
                            "properties": {
                                "tp": {
                                    "enum": choices[heads],
                                    "description": f"{', '.join(names)} have {heads} attention heads: tp must "
                                    "divide them",
                                }
                            }
                        }
                    }
                },
            }
        )
    return rules


PIPELINE_RULE: dict[str, Any] = {
    "if": {
        "properties": {"parallelism": {"properties": {"pp": {"minimum": 2}}, "required": ["pp"]}},
        "required": ["parallelism"],
    },
    "then": {
        "properties": {
            "speculative": {
                "properties": {
                    "enabled": {
                        "const": False,
                        "description": "pipeline parallel (pp > 1) cannot run MTP speculative decoding",
                    }
                },
                "required": ["enabled"],
            }
        },
        "required": ["speculative"],
    },
}


def settings_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """(schema of ``settings``, its ``$defs``) for the chart."""
    raw = _clean(Settings.model_json_schema())
    defs: dict[str, Any] = raw.pop("$defs")
    raw["properties"].pop("config", None)  # pods get their settings from serveConfigV2 only
    raw["description"] = (
        "qwen-serve settings (serving/config/settings.py): passed verbatim to serving.app:app_builder and "
        "checked by `serving config validate`"
    )
    model = defs["ModelSettings"]["properties"]
    model["preset"]["enum"] = list(PRESETS)
    model["served_name"]["anyOf"][0]["pattern"] = "^[^:]+$"
    engine = defs["EngineSettings"]["properties"]
    engine["api_key"] = {"type": "null", "description": "never in values: secrets do not go into serveConfigV2"}
    engine["port"]["minimum"] = 1
    engine["port"]["description"] = "engine HTTP port; the chart needs a fixed one (NetworkPolicy, scraping)"
    keys = defs["ApiKeySettings"]["properties"]["keys"]
    keys["maxItems"] = 0
    keys["description"] = (
        "never in values: put keys in secrets.tenants (digests), secrets.apiKeys or secrets.existingSecret"
    )
    raw["allOf"] = [*_tp_rules(), PIPELINE_RULE]
    return raw, defs


def tenants_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """(schema of the chart's ``secrets.tenants``, its ``$defs``): a list of tenants-file entries
    (``serving.gateway.auth.TenantEntry``)."""
    from serving.gateway.auth import TenantEntry

    item = _clean(TenantEntry.model_json_schema())
    defs: dict[str, Any] = item.pop("$defs", {})
    item["description"] = "one tenant: its name, its keys' digests, and optionally weight, priority and limits"
    item["required"] = ["name", "keys"]  # the chart's tenants file must name who may call
    item["properties"]["keys"]["minItems"] = 1
    schema = {
        "type": "array",
        "description": "tenants file entries (serving/gateway/auth.py TenantEntry); key digests only, never keys",
        "items": item,
    }
    return schema, defs


def chart_schema(current: dict[str, Any]) -> dict[str, Any]:
    """``current`` (the chart's schema) with its settings part and ``secrets.tenants`` regenerated."""
    out = dict(current)
    settings, defs = settings_schema()
    tenants, tenant_defs = tenants_schema()
    props = dict(out.get("properties", {}))
    props["settings"] = settings
    secrets = dict(props.get("secrets", {"type": "object", "properties": {}}))
    secrets["properties"] = {**secrets.get("properties", {}), "tenants": tenants}
    props["secrets"] = secrets
    out["properties"] = props
    out["$defs"] = {**out.get("$defs", {}), **defs, **tenant_defs}
    return out


def render_schema(path: Path = SCHEMA_FILE) -> str:
    current = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return json.dumps(chart_schema(current), indent=2, ensure_ascii=False) + "\n"
