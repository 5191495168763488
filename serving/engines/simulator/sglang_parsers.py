"""SGLang's own ``qwen3`` reasoning parser and ``qwen3_coder`` tool-call detector, when available.

With ``--sim-sglang-path DIR`` (an unpacked SGLang wheel: the folder that holds ``sglang/``), the
simulator renders what the model would *write* — ``<think>…</think>`` and Qwen3-Coder XML tool
calls (``<tool_call><function=NAME><parameter=K>V</parameter></function></tool_call>``) — and lets
SGLang's ``ReasoningParser("qwen3")`` and ``Qwen3CoderDetector`` turn each scheduler step's text into
``reasoning_content`` / ``content`` / ``tool_calls`` deltas, as SGLang's chat serving does. What
stays modelled: the raw text itself (filler words, arguments from the schema's required
properties), call ids and the OpenAI chunk shapes around the parsers' output.

SGLang's package ``__init__`` imports torch; only the parser modules are loaded, under a bare
``sglang`` package object. They need ``transformers``, ``msgspec``, ``ipython``,
``partial-json-parser``, ``pybase64`` and ``orjson`` importable; when anything is missing the
simulator logs why and keeps its built-in path.
"""

from __future__ import annotations

import json
import logging
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.engines.simulator import text as T

log = logging.getLogger("serving.simulator")


@dataclass(frozen=True)
class SGLangParsers:
    reasoning_parser: Any  # sglang.srt.parser.reasoning_parser.ReasoningParser
    coder_detector: Any  # sglang.srt.function_call.qwen3_coder_detector.Qwen3CoderDetector
    tool_model: Any  # sglang.srt.entrypoints.openai.protocol.Tool
    origin: str

    def session(self, *, reasoning: bool, tools: list[dict[str, Any]]) -> ParseSession:
        return ParseSession(self, reasoning=reasoning, tools=tools)


def load(path: str | None) -> SGLangParsers | None:
    """SGLang's parsers from the unpacked wheel at ``path``; None (built-in path) when unset or
    when they cannot be imported here."""
    if not path:
        return None
    root = Path(path) / "sglang"
    if not (root / "srt" / "parser" / "reasoning_parser.py").is_file():
        log.warning("--sim-sglang-path %s: no sglang/srt/parser there; built-in parsing", path)
        return None
    stubbed = "sglang" not in sys.modules
    if stubbed:
        pkg = types.ModuleType("sglang")
        pkg.__path__ = [str(root)]
        sys.modules["sglang"] = pkg
    try:
        from sglang.srt.entrypoints.openai.protocol import Tool  # type: ignore[import-not-found]
        from sglang.srt.function_call.qwen3_coder_detector import (  # type: ignore[import-not-found]
            Qwen3CoderDetector,
        )
        from sglang.srt.parser.reasoning_parser import ReasoningParser  # type: ignore[import-not-found]
    except Exception as e:  # any import failure means: use the built-in path
        if stubbed:
            for name in [m for m in sys.modules if m == "sglang" or m.startswith("sglang.")]:
                del sys.modules[name]
        log.warning("--sim-sglang-path %s: SGLang's parsers do not import here (%s: %s); built-in parsing",
                    path, type(e).__name__, e)  # fmt: skip
        return None
    return SGLangParsers(ReasoningParser, Qwen3CoderDetector, Tool, str(root))


def _value_text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def raw_pieces(out: T.Output) -> list[str]:
    """What the model writes, token by token (as many tokens as ``out`` has): reasoning inside
    ``<think>…</think>``, then content, or a Qwen3-Coder XML tool call whose text is spread over
    the argument tokens."""
    pieces = out.pieces
    raw = [x for _, x in pieces]
    idx_r = [i for i, (k, _) in enumerate(pieces) if k == T.REASONING]
    if idx_r:
        raw[idx_r[0]] = "<think>" + raw[idx_r[0]]
        if idx_r[-1] + 1 < len(pieces):
            raw[idx_r[-1]] = raw[idx_r[-1]] + "</think>\n\n"
    name_at = next((i for i, (k, _) in enumerate(pieces) if k == T.TOOL_NAME), None)
    if name_at is not None:
        args_at = [i for i, (k, _) in enumerate(pieces) if k == T.TOOL_ARGS]
        raw[name_at] = f"<tool_call>\n<function={pieces[name_at][1]}>\n"
        full_json = out.text(T.TOOL_ARGS)
        try:
            args = json.loads(full_json) if out.finish_reason == "tool_calls" else None
        except ValueError:
            args = None
        body = ""  # cut short by max_tokens: the call's opening only
        if args is not None:
            body = "".join(f"<parameter={k}>\n{_value_text(v)}\n</parameter>\n" for k, v in args.items())
            body += "</function>\n</tool_call>"
        n = len(args_at)
        if n:
            size = -(-len(body) // n)
            for j, i in enumerate(args_at):
                raw[i] = body[j * size : (j + 1) * size]
    return raw


class ParseSession:
    """One request's parsers: raw text in (step by step), OpenAI deltas out."""

    def __init__(self, p: SGLangParsers, *, reasoning: bool, tools: list[dict[str, Any]]) -> None:
        self.rp = p.reasoning_parser(model_type="qwen3", stream_reasoning=True) if reasoning else None
        self.tools = [p.tool_model.model_validate(t) for t in tools]
        self.det = p.coder_detector() if self.tools else None
        self.names: dict[int, str] = {}

    def _split(self, raw: str) -> tuple[str, str]:
        if self.rp is None:
            return "", raw
        r, n = self.rp.parse_stream_chunk(raw)
        return r or "", n or ""

    def feed(self, raw: str, call_id: str) -> list[dict[str, Any]]:
        reasoning, normal = self._split(raw)
        deltas: list[dict[str, Any]] = []
        if reasoning:
            deltas.append({"reasoning_content": reasoning})
        if self.det is not None and normal:
            res = self.det.parse_streaming_increment(normal, self.tools)
            normal = res.normal_text
            calls = []
            for c in res.calls:
                if c.name:
                    self.names[c.tool_index] = c.name
                    fn = {"name": c.name, "arguments": c.parameters or ""}
                    calls.append({"index": c.tool_index, "id": call_id, "type": "function", "function": fn})
                elif c.parameters:
                    calls.append({"index": c.tool_index, "function": {"arguments": c.parameters}})
            if normal:
                deltas.append({"content": normal})
            if calls:
                deltas.append({"tool_calls": calls})
        elif normal:
            deltas.append({"content": normal})
        return deltas

    def message(self, raw: str, call_id: str) -> dict[str, Any]:
        """The non-streaming message: SGLang's one-shot parse of the whole text."""
        reasoning, normal = (None, raw)
        if self.rp is not None:
            reasoning, normal = self.rp.parse_non_stream(raw)
        msg: dict[str, Any] = {"role": "assistant", "content": normal or None}
        if reasoning:
            msg["reasoning_content"] = reasoning
        if self.det is not None and normal:
            res = self.det.detect_and_parse(normal, self.tools)
            msg["content"] = res.normal_text or None
            if res.calls:
                msg["tool_calls"] = [
                    {"id": call_id, "index": c.tool_index, "type": "function",
                     "function": {"name": c.name, "arguments": c.parameters}}
                    for c in res.calls
                ]  # fmt: skip
        return msg
