"""Request schemas: the OpenAI fields plus the engines' extras, type-checked strictly.

Unknown fields are allowed (forward compatibility: they go to the engine untouched); known fields
must have the right JSON type — ``"stream": "yes"`` or ``"max_tokens": 1.5`` are refused, not
coerced — and every field the OpenAI API gives an enum or a shape (roles, content parts,
``tool_choice``, ``tools``, ``response_format``, ``tool_calls`` …) is checked here, so a request the
engine would refuse gets its 400 naming the field (``param``) from the gateway first. The tests check
this against SGLang's own request models. Bounds that depend on settings (``max_tokens``, ``n``,
``stop``, messages) are checked by :func:`check_limits`, so these models stay static and appear
as-is in the OpenAPI schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from serving.config.settings import LimitSettings
from serving.gateway.errors import ApiError

_MODEL_CONFIG = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
NonEmptyStr = Annotated[str, Field(min_length=1)]


class _Part(BaseModel):
    model_config = _MODEL_CONFIG


class TextPart(_Part):
    type: Literal["text"]
    text: str


class ImageUrl(_Part):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Part):
    type: Literal["image_url"]
    image_url: ImageUrl


class InputAudio(_Part):
    data: str
    format: Literal["wav", "mp3"]


class InputAudioPart(_Part):
    type: Literal["input_audio"]
    input_audio: InputAudio


class MediaUrl(_Part):
    url: str


class VideoUrlPart(_Part):
    """SGLang / vLLM extension: a video by URL."""

    type: Literal["video_url"]
    video_url: MediaUrl


class AudioUrlPart(_Part):
    """SGLang / vLLM extension: audio by URL."""

    type: Literal["audio_url"]
    audio_url: MediaUrl


def _by_type(value: Any) -> str | None:
    # Tags in brackets: the error path the gateway reports (``param``) leaves them out, so a bad
    # part reads ``messages.0.content.1.image_url.detail``.
    return f"[{value['type']}]" if isinstance(value, dict) and isinstance(value.get("type"), str) else None


def _unknown_type(what: str, tags: str) -> Discriminator:
    return Discriminator(
        _by_type, custom_error_type="invalid_type", custom_error_message=f"{what} type must be one of: {tags}"
    )


# OpenAI's ``file`` and ``refusal`` parts are not accepted: neither SGLang nor vLLM takes them.
ContentPart: TypeAlias = Annotated[
    Annotated[TextPart, Tag("[text]")]
    | Annotated[ImagePart, Tag("[image_url]")]
    | Annotated[InputAudioPart, Tag("[input_audio]")]
    | Annotated[VideoUrlPart, Tag("[video_url]")]
    | Annotated[AudioUrlPart, Tag("[audio_url]")],
    _unknown_type("content part", "text, image_url, input_audio, video_url, audio_url"),
]


def _str_or_list(value: Any) -> str:
    return "list" if isinstance(value, list) else "str"


# One branch or the other, so errors inside a part are reported at the part, not at ``content``.
Content: TypeAlias = Annotated[
    Annotated[str, Tag("str")] | Annotated[list[ContentPart], Tag("list")], Discriminator(_str_or_list)
]


class FunctionCall(_Part):
    name: str
    arguments: str | dict[str, Any]


class ToolCall(_Part):
    """A tool call an assistant message carries back in the conversation."""

    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionDefinition(_Part):
    name: NonEmptyStr
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Part):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class ToolChoiceFunction(_Part):
    name: str


class NamedToolChoice(_Part):
    type: Literal["function"]
    function: ToolChoiceFunction


class JsonSchemaFormat(_Part):
    name: str
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextFormat(_Part):
    type: Literal["text"]


class JsonObjectFormat(_Part):
    type: Literal["json_object"]


class JsonSchemaResponseFormat(_Part):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


class Structure(_Part):
    begin: str
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    end: str


class StructuralTagFormat(_Part):
    """SGLang extension (its legacy structural-tag form): constrained regions between triggers."""

    type: Literal["structural_tag"]
    structures: list[Structure]
    triggers: list[str]
    at_least_one: bool | None = None


ResponseFormat: TypeAlias = Annotated[
    Annotated[TextFormat, Tag("[text]")]
    | Annotated[JsonObjectFormat, Tag("[json_object]")]
    | Annotated[JsonSchemaResponseFormat, Tag("[json_schema]")]
    | Annotated[StructuralTagFormat, Tag("[structural_tag]")],
    _unknown_type("response_format", "text, json_object, json_schema, structural_tag"),
]


class ChatMessage(BaseModel):
    model_config = _MODEL_CONFIG
    role: Role
    content: Content | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None

    @model_validator(mode="after")
    def _content_present(self) -> ChatMessage:
        if self.role in ("system", "developer", "user", "tool") and self.content is None:
            raise ValueError(f"a {self.role} message needs content")
        if self.role == "assistant" and self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs content or tool_calls")
        if isinstance(self.content, list) and not self.content:
            raise ValueError("content must not be an empty list")
        return self


class StreamOptions(BaseModel):
    model_config = _MODEL_CONFIG
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class ChatTemplateKwargs(BaseModel):
    model_config = _MODEL_CONFIG
    enable_thinking: bool | None = None
    preserve_thinking: bool | None = None


class _Sampling(BaseModel):
    """Fields shared by chat and completions (OpenAI + SGLang/vLLM extras)."""

    model_config = _MODEL_CONFIG
    model: NonEmptyStr
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1)
    stop: NonEmptyStr | list[NonEmptyStr] | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=2.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    seed: int | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    user: str | None = None
    ignore_eos: bool | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    chat_template_kwargs: ChatTemplateKwargs | None = None
    separate_reasoning: bool | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None


class CompletionRequest(_Sampling):
    prompt: NonEmptyStr | list[NonEmptyStr] | list[int] | list[list[int]] = Field(min_length=1)
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)
    logprobs: int | None = Field(None, ge=0, le=20)


def check_limits(req: _Sampling, limits: LimitSettings, context_length: int) -> None:
    """Bounds from settings → 400 naming the field."""
    cap = min(limits.max_tokens, context_length)
    for field in ("max_tokens", "max_completion_tokens"):
        v = getattr(req, field, None)
        if v is not None and v > cap:
            raise ApiError(400, f"{field} must be at most {cap} (got {v})", code="invalid_value", param=field)
    if req.n is not None and req.n > limits.max_n:
        raise ApiError(400, f"n must be at most {limits.max_n} (got {req.n})", code="invalid_value", param="n")
    if isinstance(req.stop, list) and len(req.stop) > limits.max_stop:
        raise ApiError(400, f"stop takes at most {limits.max_stop} sequences", code="invalid_value", param="stop")
    if isinstance(req, ChatCompletionRequest) and len(req.messages) > limits.max_messages:
        msg = f"at most {limits.max_messages} messages per request"
        raise ApiError(400, msg, code="invalid_value", param="messages")
    prompt = req.prompt if isinstance(req, CompletionRequest) else None
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], list) and any(not p for p in prompt):
        raise ApiError(400, "prompt token lists must not be empty", code="invalid_value", param="prompt")


def forwarded_body(body: dict[str, Any], req: _Sampling) -> dict[str, Any]:
    """The body as the engine gets it: a known field sent as ``null`` means "unset" in the OpenAI
    API, but SGLang's models type many of them as plain ``bool``/``float``/``int`` and refuse
    ``null`` (``logprobs``, ``presence_penalty``, ``parallel_tool_calls``, completions'
    ``max_tokens`` and ``echo`` …), so such fields are left out. Unknown fields pass untouched."""
    known = type(req).model_fields
    return {k: v for k, v in body.items() if v is not None or k not in known}
