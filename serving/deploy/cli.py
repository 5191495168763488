"""`serving deploy …`: what the chart derives from a values file, computed by the Python side."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from serving.cli.errors import fail
from serving.config import ConfigError

deploy_app = typer.Typer(help="Kubernetes: Serve config and chart schema from the settings tree.", no_args_is_help=True)

ValuesOpt = Annotated[
    list[Path] | None,
    typer.Option("--values", "-f", help="chart values file(s) layered on the chart's values.yaml, like helm -f"),
]


def merge_values(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's coalescing: maps merge key by key, anything else is replaced; null deletes a key."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = value
    return out


def load_values(files: list[Path] | None, chart_dir: Path | None = None) -> dict[str, Any]:
    """The chart's values.yaml with ``files`` layered on top, in order."""
    from serving.deploy.paths import CHART_DIR

    values: dict[str, Any] = {}
    for path in [(chart_dir or CHART_DIR) / "values.yaml", *(files or [])]:
        if not path.is_file():
            raise ValueError(f"--values: file not found: {path}")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"--values: {path} must hold a mapping")
        values = merge_values(values, data)
    return values


@deploy_app.command("serve-config")
def serve_config_cmd(
    files: ValuesOpt = None,
    expand: Annotated[
        bool, typer.Option("--expand", help="add the deployments' options derived at deploy time")
    ] = False,
) -> None:
    """Print the serveConfigV2 the chart renders for these values (settings validated first)."""
    from serving.deploy.serve_config import expanded_serve_config, serve_config

    try:
        settings = load_values(files).get("settings") or {}
        cfg = expanded_serve_config(settings) if expand else serve_config(settings)
    except (ConfigError, ValueError) as exc:
        fail(exc)
    typer.echo(yaml.safe_dump(cfg, sort_keys=False), nl=False)


@deploy_app.command("settings")
def settings_cmd(files: ValuesOpt = None) -> None:
    """Print the values' settings block as a YAML settings file (for `serving launch-plan -c`)."""
    try:
        settings = load_values(files).get("settings") or {}
    except ValueError as exc:
        fail(exc)
    typer.echo(yaml.safe_dump(settings, sort_keys=False), nl=False)


def _print_or_write(text: str, path: Path, write: bool) -> None:
    if write:
        path.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {path}")
    else:
        typer.echo(text, nl=False)


@deploy_app.command("schema")
def schema_cmd(
    write: Annotated[bool, typer.Option("--write", help="rewrite helm/qwen-serve/values.schema.json")] = False,
) -> None:
    """Print (or write) the chart's values.schema.json with its settings part regenerated."""
    from serving.deploy.schema import SCHEMA_FILE, render_schema

    _print_or_write(render_schema(), SCHEMA_FILE, write)


@deploy_app.command("helpers")
def helpers_cmd(
    write: Annotated[bool, typer.Option("--write", help="rewrite helm/qwen-serve/templates/_generated.tpl")] = False,
) -> None:
    """Print (or write) the chart's generated helpers: preset repos, ingress env, setting defaults."""
    from serving.deploy.chart_helpers import HELPERS_FILE, render_helpers

    _print_or_write(render_helpers(), HELPERS_FILE, write)


@deploy_app.command("k8s-base")
def k8s_base_cmd(
    write: Annotated[bool, typer.Option("--write", help="rewrite k8s/base from the chart's defaults")] = False,
) -> None:
    """Print (or write) k8s/base: the chart's default profile as plain manifests for kustomize."""
    from serving.deploy.kustomize import BASE_DIR, render_base, write_base

    if write:
        for path in write_base():
            typer.echo(f"wrote {path}")
        return
    for name, text in render_base().items():
        typer.echo(f"# --- {BASE_DIR.name}/{name}")
        typer.echo(text, nl=False)
