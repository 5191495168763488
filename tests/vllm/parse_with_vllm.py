"""Run with .venv-vllm's Python: parse every argv in the JSON file (argv[1]) with the installed
vLLM's own `serve` argument parser and its post-parse validation, and look the reasoning and tool
parser names up in vLLM's registries; print one JSON verdict per plan.

Input: [{"name": ..., "args": [...]}] — the argv after the program words (`vllm serve` or
`python -m vllm.entrypoints.openai.api_server`)."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path


def main(path: str) -> int:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.reasoning import ReasoningParserManager
    from vllm.tool_parsers import ToolParserManager
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    reasoning, tools = set(ReasoningParserManager.list_registered()), set(ToolParserManager.list_registered())

    out = []
    for case in json.loads(Path(path).read_text()):
        parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
        err = io.StringIO()
        verdict: dict[str, object] = {"name": case["name"]}
        try:
            with contextlib.redirect_stderr(err):
                ns = parser.parse_args(case["args"])
            validate_parsed_serve_args(ns)
            # parser names are only looked up at start-up: check them against the registries here
            if ns.reasoning_parser and ns.reasoning_parser not in reasoning:
                raise ValueError(f"--reasoning-parser {ns.reasoning_parser} is not registered")
            if ns.tool_call_parser and ns.tool_call_parser not in tools:
                raise ValueError(f"--tool-call-parser {ns.tool_call_parser} is not registered")
            verdict |= {"ok": True, "model": ns.model_tag or ns.model, "tp": ns.tensor_parallel_size}
        except SystemExit:
            verdict |= {"ok": False, "error": err.getvalue().strip().splitlines()[-1:]}
        except Exception as exc:  # validation errors
            verdict |= {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.append(verdict)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
