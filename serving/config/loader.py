"""Load settings from YAML + env + CLI overrides, validate, and turn every failure into one clear
message that names the field (never a traceback)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from serving.config.settings import Settings
from serving.config.validation import ConfigError, Problem, validate

CONFIG_ENV = "QWEN_SERVE_CONFIG"


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["gateway.port=9000", "engine.extra_args=[\\"--x\\"]"]`` → nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError([Problem(item, "override must look like section.field=value")])
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError([Problem(key, "conflicts with another override")])
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError([Problem(key, f"value is not valid YAML: {exc}")]) from None
    return out


def _check_yaml(path: Path) -> None:
    if not path.is_file():
        raise ConfigError([Problem("config", f"file not found: {path}")])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem("config", f"{path} is not valid YAML: {exc}")]) from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError([Problem("config", f"{path} must hold a mapping of sections, not {type(data).__name__}")])


def _problems_from(exc: ValidationError) -> list[Problem]:
    out = []
    for err in exc.errors():
        field = ".".join(str(x) for x in err["loc"]) or "settings"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting (typo?)"
        elif "input" in err and not isinstance(err["input"], (dict, list)):
            msg = f"{msg} (got {err['input']!r})"
        out.append(Problem(field, msg))
    return out


def load_settings(
    config: str | Path | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    *,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> Settings:
    """Resolve settings with the documented precedence and validate them.

    ``env`` defaults to the process environment; tests pass their own mapping.
    Raises :class:`ConfigError` naming each bad field.
    """
    import os

    environ = dict(os.environ if env is None else env)
    path = config or environ.get(CONFIG_ENV)
    init = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
    if path:
        _check_yaml(Path(path))
    cls = type("ResolvedSettings", (Settings,), {"yaml_source": Path(path) if path else None})
    saved = dict(os.environ)
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(environ)
        os.environ.pop(CONFIG_ENV, None)  # consumed above; not a field
        settings = cls(**init)
    except ValidationError as exc:
        raise ConfigError(_problems_from(exc)) from None
    finally:
        if env is not None or CONFIG_ENV in saved:
            os.environ.clear()
            os.environ.update(saved)
    return validate(settings) if check else settings


def settings_to_wire(s: Settings) -> dict[str, Any]:
    """Settings as plain data *with* secrets, for handing to Ray actors in the same cluster.
    Never print or log the result: use ``Settings.redacted()`` for that."""

    def reveal(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: reveal(x) for k, x in v.items()}
        if isinstance(v, list):
            return [reveal(x) for x in v]
        if hasattr(v, "get_secret_value"):
            return v.get_secret_value()
        return v

    return reveal(s.model_dump(mode="python", exclude={"config"}))


def settings_from_wire(data: Mapping[str, Any]) -> Settings:
    """Rebuild settings from :func:`settings_to_wire` output without reading env or files again."""
    return validate(Settings.model_validate(dict(data)))
