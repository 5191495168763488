"""`serving` — inspect settings, print launch plans, run the stack.

Every bad input ends in one message naming the field and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml

from serving.cli.errors import FAILED, exits_on, fail
from serving.config import Settings, load_settings
from serving.deploy.cli import deploy_app
from serving.engines.simulator.report import app as simulator_app

app = typer.Typer(help="qwen-serve: serve the Qwen3.6 family on Ray Serve + SGLang.", no_args_is_help=True)
config_app = typer.Typer(help="Show and validate settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(simulator_app, name="simulator")
app.add_typer(deploy_app, name="deploy")


ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file (or QWEN_SERVE_CONFIG)")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="override, e.g. --set parallelism.tp=8 (repeatable)")
]


# Configuration errors (a ConfigError is a ValueError) become one readable message and exit code 2.
clear_errors = exits_on(ValueError)


def _load(config: Path | None, overrides: list[str] | None) -> Settings:
    return load_settings(config, overrides or [])


@config_app.command("show")
@clear_errors
def config_show(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of YAML")] = False,
) -> None:
    """Print the resolved settings (secrets redacted)."""
    data = _load(config, overrides).redacted()
    typer.echo(json.dumps(data, indent=2) if as_json else yaml.safe_dump(data, sort_keys=False))


@config_app.command("validate")
@clear_errors
def config_validate(
    file: Annotated[Path, typer.Argument(help="YAML settings file")],
    overrides: SetOpt = None,
) -> None:
    """Check a settings file; exit 0 if it can run, 2 with every problem otherwise."""
    s = _load(file, overrides)
    typer.echo(
        f"ok: {s.model.preset} on {s.engine.kind.value}, tp={s.parallelism.tp} pp={s.parallelism.pp} "
        f"nodes={s.parallelism.nodes}, context {s.resolved_context_length}"
    )


@app.command("launch-plan")
@clear_errors
def launch_plan(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    rank: Annotated[int | None, typer.Option("--rank", help="only this node rank")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable plan")] = False,
    host: Annotated[str, typer.Option(help="engine bind address")] = "0.0.0.0",
    port: Annotated[int | None, typer.Option(help="engine port (default engine.port)")] = None,
    dist_init_addr: Annotated[str | None, typer.Option(help="rank 0 host:port, for multi-node plans")] = None,
    exec_: Annotated[bool, typer.Option("--exec", help="replace this process with the rank's engine")] = False,
) -> None:
    """Print the exact engine argv + env for each node rank (what the replicas and pods run)."""
    from serving.engines import plan_instance

    s = _load(config, overrides)
    # engine.port 0 means "a free port per replica"; a printed plan shows SGLang's usual 30000 then
    plan = plan_instance(s, host=host, port=port or s.engine.port or 30000, dist_init_addr=dist_init_addr)
    ranks = plan.ranks if rank is None else [r for r in plan.ranks if r.rank == rank]
    if not ranks:
        raise ValueError(f"--rank: {rank} is not a rank of this plan (0..{len(plan.ranks) - 1})")
    if exec_:
        import os

        if len(ranks) != 1:
            raise ValueError("--exec: name one --rank")
        os.execvpe(ranks[0].argv[0], ranks[0].argv, {**os.environ, **ranks[0].env})
    if as_json:
        data = json.loads(plan.to_json())
        data["ranks"] = [r for r in data["ranks"] if rank is None or r["rank"] == rank]
        typer.echo(json.dumps(data, indent=2))
        return
    for r in ranks:
        typer.echo(f"# rank {r.rank}{' (serves HTTP)' if r.serves_http else ''}")
        typer.echo(r.shell())
    for note in plan.notes:
        typer.echo(f"# note: {note}")


@app.command("serve")
@clear_errors
def serve_cmd(config: ConfigOpt = None, overrides: SetOpt = None) -> None:
    """Run the whole stack locally (Ray + gateway + engine replicas) until Ctrl-C."""
    from serving.local import StackStartError, in_stack_process, run_in_own_session, serve_forever

    settings = _load(config, overrides)
    if not settings.ray.address and not in_stack_process():  # a local cluster runs in a session of its own
        argv = ["serve", *(["--config", str(config)] if config else [])]
        argv += [arg for o in overrides or [] for arg in ("--set", o)]
        raise typer.Exit(run_in_own_session(argv))
    try:
        serve_forever(settings)
    except StackStartError as exc:
        fail(f"the stack did not start.\n{exc}", FAILED)


def main() -> None:  # pragma: no cover - console entry
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
