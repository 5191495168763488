"""Routing policies: a registry of classes behind one async ``choose(ctx, endpoints)``.

Load is what this gateway has outstanding on each endpoint (exact: the dispatcher calls the
router's ``dispatched`` / ``completed`` hooks around every engine request, so per-endpoint load
lives here and nowhere else), or the engine's own running + queued count from the registry when
that is higher (other gateway replicas share the engine). Policies never see draining endpoints;
the caller filters them.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from serving.config.settings import RoutingPolicy, RoutingSettings
from serving.registry import Endpoint


@dataclass(frozen=True)
class RequestContext:
    """What a policy may look at: the affinity keys, never the whole body."""

    model: str
    prefix: str = ""  # system + first user message (chat) or the prompt, cut to routing.prefix_chars
    session: str | None = None  # the session header's value


class Outstanding:
    """Requests this gateway has in flight per endpoint url."""

    def __init__(self) -> None:
        self._n: dict[str, int] = {}

    def inc(self, url: str) -> None:
        self._n[url] = self._n.get(url, 0) + 1

    def dec(self, url: str) -> None:
        left = self._n.get(url, 0) - 1
        if left > 0:
            self._n[url] = left
        else:
            self._n.pop(url, None)

    def get(self, url: str) -> int:
        return self._n.get(url, 0)

    def load(self, ep: Endpoint) -> float:
        return max(float(self.get(ep.url)), ep.load)


class Router:
    """Base: subclasses implement ``choose``; ``endpoints`` is never empty."""

    name: ClassVar[RoutingPolicy]

    def __init__(self, cfg: RoutingSettings, outstanding: Outstanding | None = None, rng: random.Random | None = None):
        self.cfg = cfg
        self.outstanding = outstanding if outstanding is not None else Outstanding()
        self.rng = rng or random.Random()  # noqa: S311  # load balancing, not cryptography

    async def choose(self, ctx: RequestContext, endpoints: Sequence[Endpoint]) -> Endpoint:
        raise NotImplementedError

    def dispatched(self, ep: Endpoint) -> None:
        """A request was sent to ``ep``; every call is matched by one ``completed``."""
        self.outstanding.inc(ep.url)

    def completed(self, ep: Endpoint) -> None:
        """A request sent to ``ep`` ended (answered, failed, or aborted)."""
        self.outstanding.dec(ep.url)

    def load(self, ep: Endpoint) -> float:
        return self.outstanding.load(ep)

    def least_loaded(self, endpoints: Sequence[Endpoint]) -> Endpoint:
        """Power of two choices: two distinct random candidates, the less loaded wins."""
        if len(endpoints) == 1:
            return endpoints[0]
        a, b = self.rng.sample(list(endpoints), 2)
        return a if self.outstanding.load(a) <= self.outstanding.load(b) else b


class LeastOutstandingRouter(Router):
    name = RoutingPolicy.LEAST_OUTSTANDING

    async def choose(self, ctx: RequestContext, endpoints: Sequence[Endpoint]) -> Endpoint:
        return self.least_loaded(endpoints)


def _rendezvous(key: str, endpoints: Sequence[Endpoint]) -> Endpoint:
    """Highest-random-weight hashing: a key keeps its endpoint while that endpoint exists, and
    only the keys of an endpoint that leaves move."""

    def weight(ep: Endpoint) -> bytes:
        return hashlib.blake2b(f"{ep.replica_id}\0{key}".encode(), digest_size=8).digest()

    return max(endpoints, key=weight)


class _AffinityRouter(Router):
    def key(self, ctx: RequestContext) -> str | None:
        raise NotImplementedError

    async def choose(self, ctx: RequestContext, endpoints: Sequence[Endpoint]) -> Endpoint:
        key = self.key(ctx)
        if not key or len(endpoints) == 1:
            return self.least_loaded(endpoints)
        ep = _rendezvous(key, endpoints)
        mean = sum(self.outstanding.load(e) for e in endpoints) / len(endpoints)
        if self.outstanding.load(ep) > self.cfg.affinity_max_load_ratio * max(mean, 1.0):
            return self.least_loaded(endpoints)  # affine engine overloaded: spill over
        return ep


class PrefixAffinityRouter(_AffinityRouter):
    name = RoutingPolicy.PREFIX_AFFINITY

    def key(self, ctx: RequestContext) -> str | None:
        return ctx.prefix or None


class SessionAffinityRouter(_AffinityRouter):
    name = RoutingPolicy.SESSION_AFFINITY

    def key(self, ctx: RequestContext) -> str | None:
        return ctx.session


class RoundRobinRouter(Router):
    name = RoutingPolicy.ROUND_ROBIN

    def __init__(self, cfg: RoutingSettings, outstanding: Outstanding | None = None, rng: random.Random | None = None):
        super().__init__(cfg, outstanding, rng)
        self._counter = itertools.count()

    async def choose(self, ctx: RequestContext, endpoints: Sequence[Endpoint]) -> Endpoint:
        ordered = sorted(endpoints, key=lambda e: e.replica_id)
        return ordered[next(self._counter) % len(ordered)]


ROUTERS: dict[RoutingPolicy, type[Router]] = {
    cls.name: cls for cls in (LeastOutstandingRouter, PrefixAffinityRouter, SessionAffinityRouter, RoundRobinRouter)
}


def make_router(
    cfg: RoutingSettings, outstanding: Outstanding | None = None, rng: random.Random | None = None
) -> Router:
    return ROUTERS[cfg.policy](cfg, outstanding, rng)


def affinity_prefix(body: dict[str, object], chars: int) -> str:
    """The conversation's stable head: system message(s) + first user message, or the prompt."""
    msgs = body.get("messages")
    parts: list[str] = []
    if isinstance(msgs, list):
        for m in msgs:
            if not isinstance(m, dict):
                continue
            parts.append(f"{m.get('role')}:{_text(m.get('content'))}")
            if m.get("role") == "user":
                break
    else:
        prompt = body.get("prompt")
        parts.append(prompt if isinstance(prompt, str) else repr(prompt)[: chars * 2])
    return "\n".join(parts)[:chars]


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""
