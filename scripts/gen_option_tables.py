"""Generate the engines' ``serve`` option tables from their pinned wheels (``make reference``).

For each engine: fetch the wheel (``pip download --no-deps``, unpacked into ``.cache/engines/``),
build the engine's own argparse parser with its heavy dependencies stubbed (see
``engine_wheels.py``), and write every option as ``{opts, dest, type, action, choices, default}``.

    python scripts/gen_option_tables.py            # write the tables
    python scripts/gen_option_tables.py --check    # exit 1 if a committed table differs

SGLang 0.5.23: ``sglang serve`` builds ``argparse.ArgumentParser(prog="sglang serve")`` and calls
``ServerArgs.add_cli_args`` (``sglang/srt/server_args.py``, options declared in
``sglang/srt/arg_groups/fields/``). vLLM 0.33.0 is not generated here: see ``VLLM_NOTE``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine_wheels  # the sibling module, found through the path set just above

ROOT = Path(__file__).resolve().parents[1]
SGLANG_VERSION = "0.5.23"
SGLANG_TABLE = ROOT / "serving" / "engines" / "reference" / f"sglang-serve-{SGLANG_VERSION}.flags.json"
VLLM_TABLE = ROOT / "tests" / "data" / "reference" / "vllm-serve-0.33.0.flags.json"
NOTE = (
    "Option table of the engine's own argparse parser (names, types, choices, defaults), dumped from "
    "the released wheel. Help texts omitted."
)


def describe(action: argparse.Action) -> dict[str, Any]:
    """One option as the tables record it: the converter's name (or the action's class when the
    option takes no converter), choices as a list, the default as its ``repr``."""
    kind = type(action).__name__
    typ = getattr(action.type, "__name__", None) or kind
    choices = sorted(action.choices) if isinstance(action.choices, set) else action.choices
    return {
        "opts": list(action.option_strings),
        "dest": action.dest,
        "type": typ,
        "action": kind,
        "choices": list(choices) if choices is not None else None,
        "default": repr(action.default),
    }


def sglang_parser(root: Path) -> argparse.ArgumentParser:
    server_args = engine_wheels.stubbed_import(root, "sglang.srt.server_args")
    parser = argparse.ArgumentParser(prog="sglang serve")
    with engine_wheels.stubbed_import_context(root, "sglang"):
        server_args.ServerArgs.add_cli_args(parser)
    return parser


def sglang_table(root: Path | None = None) -> dict[str, Any]:
    root = root or engine_wheels.fetch("sglang", SGLANG_VERSION)
    parser = sglang_parser(root)
    options = [describe(a) for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    return {"source": f"sglang {SGLANG_VERSION} `sglang serve`", "note": NOTE, "options": options}


def _render(table: dict[str, Any]) -> str:
    return json.dumps(table, indent=1) + "\n"


def _unordered(option: dict[str, Any]) -> dict[str, Any]:
    # Some choices are sets in the engine (e.g. --sampling-backend): their order is not data.
    choices = option["choices"]
    return {**option, "choices": sorted(map(str, choices)) if choices is not None else None}


def _compare(path: Path, table: dict[str, Any]) -> list[str]:
    """Differences between the committed table and a fresh one, option by option."""
    old = {tuple(o["opts"]): _unordered(o) for o in json.loads(path.read_text())["options"]}
    new = {tuple(o["opts"]): _unordered(o) for o in table["options"]}
    out = [f"only in {path.name}: {k}" for k in old.keys() - new.keys()]
    out += [f"only in the wheel: {k}" for k in new.keys() - old.keys()]
    out += [f"{k}: {old[k]} != {new[k]}" for k in old.keys() & new.keys() if old[k] != new[k]]
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with the committed tables; write nothing")
    ap.add_argument("--against", type=Path, help="compare the SGLang table with this file instead")
    args = ap.parse_args(argv)
    table = _sglang_with_source()
    if args.check or args.against:
        target = args.against or SGLANG_TABLE
        diffs = _compare(target, table)
        for d in diffs:
            print(d)
        print(f"{target}: {len(table['options'])} options, {len(diffs)} differences")
        return 1 if diffs else 0
    SGLANG_TABLE.parent.mkdir(parents=True, exist_ok=True)
    before = SGLANG_TABLE.read_text() if SGLANG_TABLE.is_file() else ""
    after = _render(table)
    SGLANG_TABLE.write_text(after)
    changed = sum(1 for line in difflib.unified_diff(before.splitlines(), after.splitlines()) if line[:1] in "+-")
    print(f"wrote {SGLANG_TABLE.relative_to(ROOT)}: {len(table['options'])} options ({changed} changed lines)")
    print(f"{VLLM_TABLE.relative_to(ROOT)}: kept as committed ({VLLM_NOTE})")
    return 0


def _sglang_with_source() -> dict[str, Any]:
    root = engine_wheels.fetch("sglang", SGLANG_VERSION)
    table = sglang_table(root)
    record = engine_wheels.source_record(root)
    if record:
        table["wheel"] = {k: record[k] for k in ("file", "sha256", "fetched_with")}
    return table


VLLM_NOTE = "not regenerated by this script; see tests/data/reference/README.md"


if __name__ == "__main__":
    raise SystemExit(main())
