"""Request schemas: the OpenAI fields plus the engines' extras, type-checked strictly.

Unknown fields are allowed (forward compatibility: they go to the engine untouched); known fields
must have the right JSON type — ``"stream": "yes"`` or ``"max_tokens": 1.5`` are refused, not
coerced. Bounds that depend on settings (``max_tokens``, ``n``, ``stop``, messages) are checked by
:func:`check_limits`, so these models stay static and appear as-is in the OpenAPI schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.config.settings import LimitSettings
from serving.gateway.errors import ApiError

_MODEL_CONFIG = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
NonEmptyStr = Annotated[str, Field(min_length=1)]


class ContentPart(BaseModel):
    model_config = _MODEL_CONFIG
    type: Literal["text", "image_url", "input_audio", "video_url", "file"]
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = _MODEL_CONFIG
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
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
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    ignore_eos: bool | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
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
