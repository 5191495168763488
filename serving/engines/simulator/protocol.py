"""Request validation and response encoding for SGLang's OpenAI routes (chat and completions).

Errors are raised as :class:`ApiError` and rendered once, in the OpenAI shape
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from serving.engines.simulator import text as T
from serving.engines.simulator.sglang_parsers import ParseSession, SGLangParsers, raw_pieces

ROLES = {"system", "user", "assistant", "tool", "developer", "function"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, type_: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.type = type_ or {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError"}.get(
            status, "ServiceUnavailableError" if status == 503 else "InternalServerError"
        )

    def body(self) -> bytes:
        err = {"message": self.message, "type": self.type, "param": self.param, "code": self.status}
        return json.dumps({"error": err}).encode()


def _bad(msg: str, param: str | None = None) -> ApiError:
    return ApiError(400, msg, param)


def _opt_int(body: dict[str, Any], name: str, lo: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"{name} must be an integer, got {type(v).__name__}", name)
    if v < lo:
        raise _bad(f"{name} must be at least {lo}, got {v}", name)
    return v


def _opt_num(body: dict[str, Any], name: str, lo: float | None = None, hi: float | None = None) -> None:
    v = body.get(name)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _bad(f"{name} must be a number, got {type(v).__name__}", name)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise _bad(f"{name} must be between {lo} and {hi}, got {v}", name)


def _opt_bool(body: dict[str, Any], name: str) -> bool | None:
    v = body.get(name)
    if v is not None and not isinstance(v, bool):
        raise _bad(f"{name} must be a boolean", name)
    return v


def _stop(body: dict[str, Any]) -> list[str]:
    v = body.get("stop")
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and all(isinstance(s, str) for s in v):
        return list(v)
    raise _bad("stop must be a string or a list of strings", "stop")


@dataclass
class GenRequest:
    """A validated generation request, route-independent."""

    route: str  # "chat" | "completion"
    rid: str
    model: str
    stream: bool
    include_usage: bool
    prompt_text: str
    prompt_tokens: int
    max_new: int
    exact: bool
    seed: int
    thinking: bool
    separate_reasoning: bool
    stop: list[str]
    tool: dict[str, Any] | None
    reasoning_hint: int | None = None  # x_reasoning_tokens: how long to think (the load generator's hint)
    response_format: dict[str, Any] | None = None
    created: int = field(default_factory=lambda: int(time.time()))


def probe_request(rid: str, model: str) -> GenRequest:
    """The health check's generation: one token after a one-token prompt, as SGLang's."""
    return GenRequest(
        route="completion",
        rid=rid,
        model=model,
        stream=False,
        include_usage=False,
        prompt_text="ping",
        prompt_tokens=1,
        max_new=1,
        exact=True,
        seed=0,
        thinking=False,
        separate_reasoning=True,
        stop=[],
        tool=None,
    )


def _parse_common(body: dict[str, Any], *, served: str, default_out: int) -> dict[str, Any]:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("model must be a string", "model")
    if model and model != served:
        raise ApiError(404, f"The model `{model}` does not exist.", "model")
    n = _opt_int(body, "n", 1)
    if n is not None and n > 1:
        raise _bad("n > 1 is not supported by this engine; send n separate requests", "n")
    stream = _opt_bool(body, "stream") or False
    so = body.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise _bad("stream_options must be an object", "stream_options")
    for name in ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty"):
        _opt_num(body, name)
    _opt_num(body, "temperature", 0, 2)
    _opt_num(body, "top_p", 0, 1)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _bad("seed must be an integer", "seed")
    ignore_eos = _opt_bool(body, "ignore_eos") or False
    mt = _opt_int(body, "max_completion_tokens", 0)
    if mt is None:
        mt = _opt_int(body, "max_tokens", 0)
    rid = body.get("rid")
    if rid is not None and not isinstance(rid, str):
        raise _bad("rid must be a string", "rid")
    return {
        "model": served,
        "stream": stream,
        "include_usage": bool(so and so.get("include_usage")),
        "max_new": default_out if mt is None else mt,
        "exact": mt is not None or ignore_eos,
        "explicit_max": mt is not None,
        "seed": seed or 0,
        "stop": _stop(body),
        "rid": rid,
    }


def _check_context(prompt_tokens: int, max_new: int, explicit: bool, ctx: int) -> int:
    if prompt_tokens >= ctx:
        raise _bad(
            f"The input ({prompt_tokens} tokens) is longer than the model's context length ({ctx} tokens).",
            "messages",
        )
    if explicit and prompt_tokens + max_new > ctx:
        raise _bad(
            f"Requested token count exceeds the model's maximum context length of {ctx} tokens. You requested "
            f"a total of {prompt_tokens + max_new} tokens: {prompt_tokens} tokens from the input messages and "
            f"{max_new} tokens for the completion. Please reduce the number of tokens in the input messages or "
            "the completion to fit within the limit.",
            "max_tokens",
        )
    return min(max_new, ctx - prompt_tokens)


def _pick_tool(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Which tool the simulated model calls.

    - ``tool_choice`` "required": the first tool; ``{"type": "function", "function": {"name": N}}``: N.
    - "auto" (the default with tools): the first tool whose name appears in the last user message.
    - "none" or no tools: no call.
    """
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list) or not all(
        isinstance(t, dict) and isinstance(t.get("function"), dict) and isinstance(t["function"].get("name"), str)
        for t in tools
    ):
        raise _bad("tools must be a list of {type: function, function: {name, parameters}}", "tools")
    choice = body.get("tool_choice", "auto")
    if not tools:
        return None
    if choice == "none":
        return None
    if choice == "required":
        return tools[0]
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), dict) else None
        for t in tools:
            if t["function"]["name"] == name:
                return t
        raise _bad(f"tool_choice names function {name!r}, which is not in tools", "tool_choice")
    if choice != "auto":
        raise _bad(
            "tool_choice must be 'none', 'auto', 'required' or {type: function, function: {name}}", "tool_choice"
        )
    last_user = next((T.content_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    return next((t for t in tools if t["function"]["name"] in last_user), None)


def parse_chat(body: Any, *, served: str, ctx: int, default_out: int, reasoning: bool) -> GenRequest:
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    msgs = body.get("messages")
    if msgs is None:
        raise _bad("messages is required", "messages")
    if not isinstance(msgs, list) or not msgs:
        raise _bad("messages must be a non-empty list", "messages")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise _bad(f"messages[{i}] must be an object with a role in {sorted(ROLES)}", f"messages[{i}]")
        c = m.get("content")
        if c is not None and not isinstance(c, str | list):
            raise _bad(f"messages[{i}].content must be a string or a list of parts", f"messages[{i}].content")
    c = _parse_common(body, served=served, default_out=default_out)
    ctk = body.get("chat_template_kwargs")
    if ctk is not None and not isinstance(ctk, dict):
        raise _bad("chat_template_kwargs must be an object", "chat_template_kwargs")
    thinking = reasoning and bool((ctk or {}).get("enable_thinking", True))
    sep = body.get("separate_reasoning", True)
    tool = _pick_tool(body, msgs)
    prompt = T.render_chat(msgs, body.get("tools"), thinking)
    ptoks = T.count_tokens(prompt) + T.image_prompt_tokens(msgs)  # prefill and KV grow with images
    max_new = _check_context(ptoks, c["max_new"], c["explicit_max"], ctx)
    return GenRequest(
        "chat",
        c["rid"] or "chatcmpl-" + uuid.uuid4().hex,
        c["model"],
        c["stream"],
        c["include_usage"],
        prompt,
        ptoks,
        max_new,
        c["exact"],
        c["seed"],
        thinking,
        bool(sep),
        c["stop"],
        tool,
        reasoning_hint=_opt_int(body, "x_reasoning_tokens", 0),
        response_format=_response_format(body),
    )


def _response_format(body: dict[str, Any]) -> dict[str, Any] | None:
    rf = body.get("response_format")
    if rf is None:
        return None
    if not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema", "structural_tag"):
        raise _bad(
            "response_format.type must be one of text, json_object, json_schema, structural_tag", "response_format"
        )
    if rf["type"] == "json_schema" and not isinstance((rf.get("json_schema") or {}).get("schema"), dict):
        raise _bad("response_format.json_schema.schema must be an object", "response_format")
    return rf if rf["type"] in ("json_object", "json_schema") else None  # structural tags: plain text here


def parse_completion(body: Any, *, served: str, ctx: int, default_out: int) -> GenRequest:
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    p = body.get("prompt")
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str | list):
        p = p[0]
    if isinstance(p, str):
        prompt, ptoks = p, T.count_tokens(p)
    elif isinstance(p, list) and p and all(isinstance(x, int) and not isinstance(x, bool) for x in p):
        prompt, ptoks = ",".join(map(str, p)), len(p)
    elif p is None:
        raise _bad("prompt is required", "prompt")
    else:
        raise _bad("prompt must be a string, a list of token ids, or a one-element list of either", "prompt")
    c = _parse_common(body, served=served, default_out=default_out)
    if ptoks == 0:
        raise _bad("prompt must not be empty", "prompt")
    max_new = _check_context(ptoks, c["max_new"], c["explicit_max"], ctx)
    return GenRequest(
        "completion",
        c["rid"] or "cmpl-" + uuid.uuid4().hex,
        c["model"],
        c["stream"],
        c["include_usage"],
        prompt,
        ptoks,
        max_new,
        c["exact"],
        c["seed"],
        False,
        True,
        c["stop"],
        None,
    )


# ---- encoding ----------------------------------------------------------------------------------

_SAFE = {t: t for t in T.filler(len(T.WORDS), 0)}


def esc(t: str) -> str:
    s = _SAFE.get(t)
    return s if s is not None else json.dumps(t, ensure_ascii=False)[1:-1]


def usage(req: GenRequest, out: T.Output, cached: int, cache_report: bool) -> dict[str, Any]:
    """SGLang's ``UsageInfo``, its fields in its order: the reasoning count at the top level and, when
    there is some, in OpenAI's ``completion_tokens_details`` too."""
    return {
        "prompt_tokens": req.prompt_tokens,
        "total_tokens": req.prompt_tokens + out.n_tokens,
        "completion_tokens": out.n_tokens,
        "prompt_tokens_details": {"cached_tokens": cached} if cache_report else None,
        "reasoning_tokens": out.reasoning_tokens,
        "completion_tokens_details": {"reasoning_tokens": out.reasoning_tokens} if out.reasoning_tokens else None,
    }


def _json(v: Any) -> str:
    """JSON as pydantic writes it (SGLang's ``model_dump_json``): compact, UTF-8 unescaped."""
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def delta(d: dict[str, Any]) -> str:
    """A chat delta as SGLang streams it: ``role``, ``content`` and ``reasoning_content`` always
    (null when unset), ``tool_calls`` when set, each call with SGLang's ``ToolCall`` fields."""
    out = "{" + ",".join(f'"{k}":{_json(d.get(k))}' for k in ("role", "content", "reasoning_content"))
    calls = d.get("tool_calls")
    if calls is not None:
        calls = [{"id": c.get("id"), "index": c.get("index"), "type": "function",
                  "function": {"name": c["function"].get("name"), "arguments": c["function"].get("arguments")}}
                 for c in calls]  # fmt: skip
        out += ',"tool_calls":' + _json(calls)
    return out + "}"


def inline_reasoning(out: T.Output) -> T.Output:
    """``separate_reasoning: false``: reasoning stays in the content, wrapped in think tags."""
    pieces = list(out.pieces)
    idx = [i for i, (k, _) in enumerate(pieces) if k == T.REASONING]
    if not idx:
        return out
    for i in idx:
        pieces[i] = (T.CONTENT, pieces[i][1])
    pieces[idx[0]] = (T.CONTENT, "<think>\n" + pieces[idx[0]][1])
    pieces[idx[-1]] = (T.CONTENT, pieces[idx[-1]][1] + "\n</think>\n\n")
    return T.Output(pieces, out.finish_reason, out.matched_stop, out.tool_name, out.tool_call_id, 0)


# A content or reasoning delta as ``delta`` writes it, split around its text: (before, after).
_TEXT_DELTAS = {
    kind: tuple(delta({field: "\x00"}).split("\\u0000"))
    for kind, field in ((T.CONTENT, "content"), (T.REASONING, "reasoning_content"))
}


class Encoder:
    """Pre-encoded SSE events of one request: one ``data:`` event per step (or token), then the tail.
    With SGLang's parsers (``sglang_parsers``), chat deltas come from them, fed the raw model text."""

    def __init__(self, req: GenRequest, parsers: SGLangParsers | None = None, out: T.Output | None = None) -> None:
        self.req = req
        self.session: ParseSession | None = None
        self.raw: list[str] = []
        if parsers is not None and out is not None and req.route == "chat":
            reasoning = out.reasoning_tokens > 0  # thinking on and reasoning kept separate
            tools = [req.tool] if req.tool is not None else []
            if reasoning or tools:
                self.session = parsers.session(reasoning=reasoning, tools=tools)
                self.raw = raw_pieces(out)
        model = json.dumps(req.model)
        if req.route == "chat":
            self.head = (
                f'data: {{"id":"{req.rid}","object":"chat.completion.chunk","created":{req.created},'
                f'"model":{model},"choices":[{{"index":0,"delta":'
            )
            self.tail = ',"logprobs":null,"finish_reason":null,"matched_stop":null}],"usage":null}\n\n'
        else:
            self.head = (
                f'data: {{"id":"{req.rid}","object":"text_completion","created":{req.created},'
                f'"model":{model},"choices":[{{"index":0,"text":"'
            )
            self.tail = '","logprobs":null,"finish_reason":null,"matched_stop":null}],"usage":null}\n\n'

    def first(self) -> bytes | None:
        if self.req.route != "chat":
            return None
        return (self.head + delta({"role": "assistant", "content": ""}) + self.tail).encode()

    def tokens(self, out: T.Output) -> list[bytes]:
        """One event per token (``step`` merges a run of them)."""
        return [self.step(out, i, i + 1) for i in range(out.n_tokens)]

    def step(self, out: T.Output, i: int, j: int) -> bytes:
        """The events of one scheduler step that accepted tokens ``i..j-1``: as SGLang does, one
        chunk whose delta carries every token of the step (a reasoning→content or content→tool
        boundary inside the step splits it into one chunk per field, sent together)."""
        if self.session is not None:
            deltas = self.session.feed("".join(self.raw[i:j]), out.tool_call_id or "")
            return b"".join((self.head + delta(d) + self.tail).encode() for d in deltas)
        pieces = out.pieces[i:j]
        groups: list[tuple[str, str]] = []
        for kind, x in pieces:
            if groups and groups[-1][0] == kind and kind != T.TOOL_NAME:
                groups[-1] = (kind, groups[-1][1] + x)
            else:
                groups.append((kind, x))
        return b"".join(self._event(out, kind, x) for kind, x in groups)

    def _event(self, out: T.Output, kind: str, x: str) -> bytes:
        h, t = self.head, self.tail
        if self.req.route != "chat":
            return (h + esc(x) + t).encode()
        if kind in _TEXT_DELTAS:  # the hot case: the filler text escaped once, not re-encoded per field
            pre, post = _TEXT_DELTAS[kind]
            d = pre + esc(x) + post
        elif kind == T.TOOL_NAME:
            call = {"index": 0, "id": out.tool_call_id, "type": "function", "function": {"name": x, "arguments": ""}}
            d = delta({"tool_calls": [call]})
        else:
            d = delta({"tool_calls": [{"index": 0, "function": {"arguments": x}}]})
        return (h + d + t).encode()

    def end(self, out: T.Output, finish: str, u: dict[str, Any] | None) -> bytes:
        r = self.req
        ms = json.dumps(out.matched_stop if finish == out.finish_reason else None)
        if r.route == "chat":
            ch = f'{{"index":0,"delta":{delta({})},"logprobs":null,"finish_reason":"{finish}","matched_stop":{ms}}}'
            obj = "chat.completion.chunk"
        else:
            ch = f'{{"index":0,"text":"","logprobs":null,"finish_reason":"{finish}","matched_stop":{ms}}}'
            obj = "text_completion"
        base = f'"id":"{r.rid}","object":"{obj}","created":{r.created},"model":{json.dumps(r.model)}'
        s = f'data: {{{base},"choices":[{ch}],"usage":null}}\n\n'
        if u is not None:
            s += f'data: {{{base},"choices":[],"usage":{_json(u)}}}\n\n'
        return (s + "data: [DONE]\n\n").encode()

    def full(self, out: T.Output, u: dict[str, Any]) -> dict[str, Any]:
        r = self.req
        if r.route == "chat" and self.session is not None:
            raw = "".join(self.raw[: out.n_tokens])
            choice_msg = self.session.message(raw, out.tool_call_id or "")
            return self._full_chat(out, u, choice_msg)
        if r.route == "chat":
            msg: dict[str, Any] = {"role": "assistant", "content": out.text(T.CONTENT) or None}
            if out.reasoning_tokens:
                msg["reasoning_content"] = out.text(T.REASONING)
            if out.tool_name is not None and any(k == T.TOOL_NAME for k, _ in out.pieces):
                args = out.text(T.TOOL_ARGS)
                msg["tool_calls"] = [
                    {
                        "id": out.tool_call_id,
                        "index": 0,
                        "type": "function",
                        "function": {"name": out.tool_name, "arguments": args},
                    }
                ]
            choice: dict[str, Any] = {"index": 0, "message": msg, "logprobs": None}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": out.text(T.CONTENT), "logprobs": None}
            obj = "text_completion"
        choice["finish_reason"] = out.finish_reason
        choice["matched_stop"] = out.matched_stop
        return {"id": r.rid, "object": obj, "created": r.created, "model": r.model, "choices": [choice], "usage": u}

    def _full_chat(self, out: T.Output, u: dict[str, Any], msg: dict[str, Any]) -> dict[str, Any]:
        r = self.req
        choice = {"index": 0, "message": msg, "logprobs": None, "finish_reason": out.finish_reason,
                  "matched_stop": out.matched_stop}  # fmt: skip
        return {"id": r.rid, "object": "chat.completion", "created": r.created, "model": r.model,
                "choices": [choice], "usage": u}  # fmt: skip
