"""Workload scenarios: YAML files describing prompts, output lengths, thinking and turns.

A scenario file (see ``loadtest/scenarios/*.yaml`` and the README)::

    name: chat
    prompt_tokens: {dist: lognormal, median: 200, sigma: 0.6, min: 16, max: 2048}
    output_tokens: {dist: uniform, min: 64, max: 512}
    thinking_ratio: 0.2        # share of requests sent with enable_thinking = true
    max_tokens: output         # output (the sampled length) | none (no limit) | an integer
    ignore_eos: true           # ask the engine to generate exactly max_tokens (SGLang / vLLM)
    shared_prefix_tokens: 0    # a system prompt every request of the scenario shares
    turns: null                # multi-turn: a distribution of turns per conversation
    reasoning_tokens: null     # thinking requests: a distribution of reasoning lengths, sent as a hint
    images: null               # vision: {count, sizes: [[w, h], …], variants}; see loadtest.vision

Prompts are synthetic words drawn from a small vocabulary of common English words, most of which
are one token in BPE vocabularies; ``prompt_tokens`` is therefore approximate — the server's
``usage.prompt_tokens`` is what the report counts.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from loadtest.vision import image_tokens, screenshot_data_url

SCENARIO_DIR = Path(__file__).parent / "scenarios"

# The request-body extension field that carries a thinking request's sampled reasoning length. The
# simulator may honour it (generate that many reasoning tokens before the answer); real engines
# ignore unknown fields, and the gateway forwards them untouched.
REASONING_HINT_FIELD = "x_reasoning_tokens"

# --- length distributions: a registry, each a sampler from its parameters ------------------------

Sampler = Callable[[random.Random, dict[str, float]], float]

DISTRIBUTIONS: dict[str, tuple[tuple[str, ...], Sampler]] = {
    "constant": (("value",), lambda rng, p: p["value"]),
    "uniform": (("min", "max"), lambda rng, p: rng.uniform(p["min"], p["max"])),
    "normal": (("mean", "std"), lambda rng, p: rng.gauss(p["mean"], p["std"])),
    "lognormal": (("median", "sigma"), lambda rng, p: rng.lognormvariate(math.log(p["median"]), p["sigma"])),
    "exponential": (("mean",), lambda rng, p: rng.expovariate(1.0 / p["mean"])),
}


@dataclass(frozen=True)
class Dist:
    kind: str
    params: dict[str, float]
    lo: int = 1
    hi: int = 1 << 30

    @classmethod
    def parse(cls, where: str, spec: Any) -> Dist:
        if isinstance(spec, int | float) and not isinstance(spec, bool):
            return cls("constant", {"value": float(spec)}, 1, 1 << 30)
        if not isinstance(spec, dict) or "dist" not in spec:
            raise ScenarioError(f"{where}: give a number or a mapping with 'dist' ({', '.join(DISTRIBUTIONS)})")
        kind = spec["dist"]
        if kind not in DISTRIBUTIONS:
            raise ScenarioError(
                f"{where}.dist: unknown distribution {kind!r}; choose one of {', '.join(DISTRIBUTIONS)}"
            )
        needed, _ = DISTRIBUTIONS[kind]
        extra = set(spec) - {"dist", "min", "max", *needed}
        if extra:
            raise ScenarioError(f"{where}: unknown keys {sorted(extra)} for dist {kind}")
        missing = [k for k in needed if k not in spec]
        if missing:
            raise ScenarioError(f"{where}.{missing[0]}: required for dist {kind}")
        try:
            params = {k: float(spec[k]) for k in needed}
            lo = int(spec.get("min", 1))
            hi = int(spec.get("max", 1 << 30))
        except (TypeError, ValueError):
            raise ScenarioError(f"{where}: parameters must be numbers") from None
        if lo < 1 or hi < lo:
            raise ScenarioError(f"{where}: need 1 ≤ min ≤ max (got min={lo}, max={hi})")
        return cls(kind, params, lo, hi)

    def sample(self, rng: random.Random) -> int:
        _, sampler = DISTRIBUTIONS[self.kind]
        return max(self.lo, min(self.hi, round(sampler(rng, self.params))))

    def mean(self, n: int = 4000, seed: int = 7) -> float:
        """Monte-Carlo mean after clipping (planner input)."""
        rng = random.Random(seed)  # noqa: S311 - workload randomness, not security
        return sum(self.sample(rng) for _ in range(n)) / n


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the field."""


DEFAULT_QUESTIONS = (
    "What is on this screen?",
    "Which error does this screenshot show, and how do I fix it?",
    "Describe the layout of this window.",
    "What changed between these screenshots?",
    "Read the text in the side bar.",
)


@dataclass(frozen=True)
class Images:
    """Vision requests: how many screenshots each carries and of which sizes (picked uniformly)."""

    count: Dist
    sizes: tuple[tuple[int, int], ...]
    variants: int = 8  # different pictures per size (an engine's image cache cannot serve them all)
    questions: tuple[str, ...] = DEFAULT_QUESTIONS

    @classmethod
    def parse(cls, where: str, spec: Any) -> Images:
        if not isinstance(spec, dict):
            raise ScenarioError(f"{where}: a mapping with count and sizes")
        unknown = set(spec) - {"count", "sizes", "variants", "questions"}
        if unknown:
            raise ScenarioError(f"{where}: unknown keys {sorted(unknown)}")
        sizes = spec.get("sizes")
        if not isinstance(sizes, list) or not sizes:
            raise ScenarioError(f"{where}.sizes: a non-empty list of [width, height]")
        parsed = []
        for i, wh in enumerate(sizes):
            ok = isinstance(wh, list | tuple) and len(wh) == 2 and all(isinstance(x, int) and x >= 1 for x in wh)
            if not ok:
                raise ScenarioError(f"{where}.sizes[{i}]: [width, height] in pixels (got {wh!r})")
            parsed.append((int(wh[0]), int(wh[1])))
        variants = spec.get("variants", 8)
        if not isinstance(variants, int) or variants < 1:
            raise ScenarioError(f"{where}.variants: a positive integer (got {variants!r})")
        questions = spec.get("questions", list(DEFAULT_QUESTIONS))
        if not isinstance(questions, list) or not questions or not all(isinstance(q, str) for q in questions):
            raise ScenarioError(f"{where}.questions: a non-empty list of strings")
        return cls(Dist.parse(f"{where}.count", spec.get("count", 1)), tuple(parsed), variants, tuple(questions))


@dataclass(frozen=True)
class Scenario:
    name: str
    prompt_tokens: Dist
    output_tokens: Dist
    description: str = ""
    thinking_ratio: float = 0.0
    max_tokens: str | int | None = "output"
    ignore_eos: bool = True
    shared_prefix_tokens: int = 0
    turns: Dist | None = None
    max_conversation_tokens: int = 200_000
    temperature: float | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    reasoning_tokens: Dist | None = None  # thinking requests: reasoning length, output_tokens is the answer
    images: Images | None = None

    def mean_reasoning_tokens(self) -> float | None:
        """Mean reasoning tokens per request (thinking share × mean length); None when unspecified."""
        if self.reasoning_tokens is None:
            return None
        return self.thinking_ratio * self.reasoning_tokens.mean()

    def mean_image_tokens(self) -> float:
        """Mean expected image prompt tokens per request (sizes are picked uniformly)."""
        if self.images is None:
            return 0.0
        per_image = sum(image_tokens(w, h) for w, h in self.images.sizes) / len(self.images.sizes)
        return self.images.count.mean() * per_image

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "scenario") -> Scenario:
        known = {
            "name", "description", "prompt_tokens", "output_tokens", "thinking_ratio", "max_tokens",
            "ignore_eos", "shared_prefix_tokens", "turns", "max_conversation_tokens", "temperature", "extra_body",
            "reasoning_tokens", "images",
        }  # fmt: skip
        unknown = set(data) - known
        if unknown:
            raise ScenarioError(f"{where}: unknown keys {sorted(unknown)} (typo?)")
        for key in ("name", "prompt_tokens", "output_tokens"):
            if key not in data:
                raise ScenarioError(f"{where}.{key}: required")
        ratio = data.get("thinking_ratio", 0.0)
        if not isinstance(ratio, int | float) or not 0.0 <= ratio <= 1.0:
            raise ScenarioError(f"{where}.thinking_ratio: must be a number within [0, 1] (got {ratio!r})")
        mt = data.get("max_tokens", "output")
        if not (mt is None or mt in ("output", "none") or (isinstance(mt, int) and mt >= 1)):
            raise ScenarioError(f"{where}.max_tokens: 'output', 'none' or a positive integer (got {mt!r})")
        return cls(
            name=str(data["name"]),
            description=str(data.get("description", "")),
            prompt_tokens=Dist.parse(f"{where}.prompt_tokens", data["prompt_tokens"]),
            output_tokens=Dist.parse(f"{where}.output_tokens", data["output_tokens"]),
            thinking_ratio=float(ratio),
            max_tokens=None if mt == "none" else mt,
            ignore_eos=bool(data.get("ignore_eos", True)),
            shared_prefix_tokens=int(data.get("shared_prefix_tokens", 0)),
            turns=Dist.parse(f"{where}.turns", data["turns"]) if data.get("turns") is not None else None,
            max_conversation_tokens=int(data.get("max_conversation_tokens", 200_000)),
            temperature=data.get("temperature"),
            extra_body=dict(data.get("extra_body") or {}),
            reasoning_tokens=(
                Dist.parse(f"{where}.reasoning_tokens", data["reasoning_tokens"])
                if data.get("reasoning_tokens") is not None
                else None
            ),
            images=Images.parse(f"{where}.images", data["images"]) if data.get("images") is not None else None,
        )


def builtin_scenarios() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SCENARIO_DIR.glob("*.yaml"))}


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A built-in scenario by name (chat, coding_agent, rag, long_context, agent_thinking, vision) or a
    YAML file path."""
    builtin = builtin_scenarios()
    path = builtin.get(str(name_or_path), Path(name_or_path))
    if not path.is_file():
        raise ScenarioError(f"scenario {name_or_path!r}: neither a built-in ({', '.join(builtin)}) nor a file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: must hold a mapping")
    return Scenario.from_dict(data, where=path.name)


# --- synthetic prompts ---------------------------------------------------------------------------

_WORDS = (  # noqa: SIM905 - a readable word list
    "the of and to in is for on with as by at from that this it be are was an or not have has can "
    "will more new one all time data system model user code file test value list table state order "
    "line page name type case point group number part work year day way use make find give take "
    "call read write open close start stop run build check load save send move turn keep show set "
    "high low long short small large first last next good best early late fast slow hard easy "
    "city river road house water light sound music paper money power market field price level area "
    "color window door table chair green blue red black white north south east west spring summer"
).split()


class TextPool:
    """A fixed pseudo-random word sequence; prompts are slices of it (cheap even at 128k words)."""

    def __init__(self, seed: int = 1234, size: int = 300_000) -> None:
        rng = random.Random(seed)  # noqa: S311 - workload randomness, not security
        self.words = rng.choices(_WORDS, k=size)

    def text(self, rng: random.Random, n: int) -> str:
        n = max(1, n)
        if n >= len(self.words):
            reps = n // len(self.words) + 1
            return " ".join((self.words * reps)[:n])
        start = rng.randrange(0, len(self.words) - n)
        return " ".join(self.words[start : start + n])


_POOL: TextPool | None = None


def text_pool() -> TextPool:
    global _POOL  # noqa: PLW0603 - one lazily built pool per process, read-only afterwards
    if _POOL is None:
        _POOL = TextPool()
    return _POOL


class PlannedRequest(NamedTuple):
    body: dict[str, Any]
    thinking: bool
    output_tokens: int  # sampled answer length (total output when the scenario has no reasoning_tokens)
    reasoning_tokens_hint: int | None = None
    images: int = 0
    image_tokens_expected: int = 0


@dataclass
class Conversation:
    """The requests one simulated user sends: single-shot, or a multi-turn conversation whose
    turns share the growing history (and every conversation shares the scenario's prefix)."""

    scenario: Scenario
    model: str
    rng: random.Random
    messages: list[dict[str, Any]] = field(default_factory=list)
    turns_left: int = 0
    history_tokens: int = 0

    def _system(self) -> list[dict[str, Any]]:
        n = self.scenario.shared_prefix_tokens
        if not n:
            return []
        # The same words for every user: a prefix the engine's cache can share.
        return [{"role": "system", "content": " ".join(text_pool().words[:n])}]

    def _user_content(self, n_prompt: int) -> tuple[str | list[dict[str, Any]], int, int]:
        """(content, images, expected image tokens): plain text, or screenshots + a question."""
        sc = self.scenario
        text = text_pool().text(self.rng, n_prompt)
        if sc.images is None:
            return text, 0, 0
        im = sc.images
        n = im.count.sample(self.rng)
        parts: list[dict[str, Any]] = []
        tokens = 0
        for _ in range(n):
            w, h = self.rng.choice(im.sizes)
            url = screenshot_data_url(w, h, self.rng.randrange(im.variants))
            parts.append({"type": "image_url", "image_url": {"url": url}})
            tokens += image_tokens(w, h)
        parts.append({"type": "text", "text": f"{self.rng.choice(im.questions)}\n{text}"})
        return parts, n, tokens

    def next_request(self) -> PlannedRequest:
        """The next request body and what it asks for."""
        sc = self.scenario
        if self.turns_left <= 0 or self.history_tokens > sc.max_conversation_tokens:
            self.messages = self._system()
            self.history_tokens = sc.shared_prefix_tokens
            self.turns_left = sc.turns.sample(self.rng) if sc.turns else 1
        n_prompt = sc.prompt_tokens.sample(self.rng)
        n_out = sc.output_tokens.sample(self.rng)
        content, n_images, img_tokens = self._user_content(n_prompt)
        self.messages.append({"role": "user", "content": content})
        self.history_tokens += n_prompt + img_tokens
        thinking = self.rng.random() < sc.thinking_ratio
        hint = sc.reasoning_tokens.sample(self.rng) if thinking and sc.reasoning_tokens is not None else None
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(self.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
            "chat_template_kwargs": {"enable_thinking": thinking},
        }
        if hint is not None:
            body[REASONING_HINT_FIELD] = hint
        if sc.max_tokens == "output":
            body["max_tokens"] = n_out + (hint or 0)  # room for the thinking and then the answer
        elif isinstance(sc.max_tokens, int):
            body["max_tokens"] = sc.max_tokens
        if sc.ignore_eos:
            body["ignore_eos"] = True
        if sc.temperature is not None:
            body["temperature"] = sc.temperature
        body.update(sc.extra_body)
        self.turns_left -= 1
        return PlannedRequest(body, thinking, n_out, hint, n_images, img_tokens)

    def record_answer(self, n_tokens: int) -> None:
        """Multi-turn: append a stand-in assistant turn of the answer's length to the history."""
        if self.turns_left > 0 and self.scenario.turns is not None:
            self.messages.append({"role": "assistant", "content": text_pool().text(self.rng, max(1, n_tokens))})
            self.history_tokens += n_tokens
