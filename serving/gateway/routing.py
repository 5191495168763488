"""Routing policies: a registry of classes behind one async ``choose(ctx, endpoints)``.

Load is what this gateway has outstanding on each endpoint (exact: the dispatcher calls the
router's ``dispatched`` / ``first_byte`` / ``completed`` hooks around every engine request, so
per-endpoint load lives here and nowhere else), plus what others have on that engine (other
gateway replicas share it). Others' share comes from the engine's running + queued count in the
registry, which its replica read a few seconds ago: this gateway subtracts what it had outstanding
there at that moment (it keeps the times its counts changed), so the sample's staleness only
delays what others' requests free. Taking the sample as the load now would hold requests for
seconds while an engine that finished this gateway's requests sits idle. Policies never see
draining endpoints; the caller filters them.

Prefix affinity estimates, per engine, what a request would wait for before its first token: the
prompt work queued there (uncached characters of the requests sent to it whose first byte has not
come back — an engine answers its first byte after their prefill) plus its own uncached characters,
which every request queued with it waits for too (one prefill batch). What each engine has cached
is estimated from what this gateway sent it: the conversation text is cut into blocks of
``PREFIX_BLOCK_CHARS`` characters with chained hashes (as a paged radix cache keys pages), kept per
engine in a bounded LRU. A prompt counts as cached once the engine's first byte for it came back:
an engine inserts a prompt into its radix cache when the prefill is done, so requests that share a
prefix and reach an engine together (a burst of new conversations on one system prompt) each pay
it, and are spread as such. The request goes to the engine of least estimated cost, a cache miss
charged ``routing.affinity_miss_weight`` × its characters on top (the prefill it adds for the
requests that come after).
"""

from __future__ import annotations

import hashlib
import itertools
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from serving.config.settings import RoutingPolicy, RoutingSettings
from serving.registry import Endpoint

PREFIX_BLOCK_CHARS = 256  # ≈ 64 tokens: four of SGLang's 16-token pages
MAX_TRACKED_ENGINES = 256  # prefix trackers kept (least recently used dropped): engines come and go
HISTORY_S = 10.0  # a gateway keeps its outstanding count changes at least this long,
HISTORY_INTERVALS = 5  # and at least this many replica publish intervals (autoscaling.metrics_interval_s)


def history_s(metrics_interval_s: float) -> float:
    """How long to keep this gateway's count changes so that a load sample can be matched with its
    own count at the sample's time: a sample on time is one publish interval plus a snapshot
    refresh old; five intervals cover publishes that come late."""
    return max(HISTORY_S, HISTORY_INTERVALS * metrics_interval_s)


@dataclass(frozen=True)
class RequestContext:
    """What a policy may look at: the affinity keys, never the whole body."""

    model: str
    prefix: str = ""  # system + first user message (chat) or the prompt, cut to routing.prefix_chars
    session: str | None = None  # the session header's value
    blocks: tuple[int, ...] = ()  # chained hashes of each full PREFIX_BLOCK_CHARS block of the conversation
    chars: int = 0  # the conversation text's length
    history_blocks: int = 0  # full blocks before the last assistant message: what an earlier turn sent


@dataclass(eq=False)
class Dispatch:
    """One engine request, from ``dispatched`` to ``completed``."""

    endpoint: Endpoint
    prefill_chars: int = 0  # estimated uncached prompt characters, counted as queued until the first byte
    blocks: tuple[int, ...] = ()  # the prompt's block hashes (policies that estimate caches)
    prefilling: bool = True
    done: bool = False


class Outstanding:
    """Requests this gateway has in flight per endpoint url, and those of them still before their
    first byte with their estimated uncached prompt characters. Each url's count changes are kept
    for ``history`` seconds (wall clock, the clock replicas stamp their load samples with)."""

    def __init__(self, clock: Callable[[], float] = time.time, history: float = HISTORY_S) -> None:
        self.clock = clock
        self.history = history
        self._n: dict[str, int] = {}
        self._prefill: dict[str, tuple[int, int]] = {}  # url → (requests, characters)
        self._history: dict[str, deque[tuple[float, int]]] = {}  # url → (time, count from then on)
        self._others: dict[str, tuple[float, float, float]] = {}  # url → (load_at, load, others' load)
        self._pruned_at = 0.0

    def _changed(self, url: str, n: int) -> None:
        now = self.clock()
        h = self._history.get(url)
        if h is None:
            h = self._history[url] = deque([(0.0, 0)])  # nothing outstanding before the first request
        h.append((now, n))
        cutoff = now - self.history
        while len(h) > 1 and h[1][0] <= cutoff:  # keep the last change before the cutoff: the count then
            h.popleft()
        if now - self._pruned_at > self.history:  # engines that left: drop their idle history
            self._pruned_at = now
            for u in [u for u, d in self._history.items() if u not in self._n and d[-1][0] <= cutoff]:
                del self._history[u]
                self._others.pop(u, None)

    def inc(self, url: str, prefill_chars: int = 0) -> None:
        n = self._n[url] = self._n.get(url, 0) + 1
        self._changed(url, n)
        n, chars = self._prefill.get(url, (0, 0))
        self._prefill[url] = (n + 1, chars + prefill_chars)

    def prefilled(self, url: str, prefill_chars: int = 0) -> None:
        n, chars = self._prefill.get(url, (0, 0))
        if n > 1:
            self._prefill[url] = (n - 1, max(chars - prefill_chars, 0))
        else:
            self._prefill.pop(url, None)

    def dec(self, url: str) -> None:
        left = self._n.get(url, 0) - 1
        if left > 0:
            self._n[url] = left
        else:
            self._n.pop(url, None)
        self._changed(url, max(left, 0))

    def get(self, url: str) -> int:
        return self._n.get(url, 0)

    def at(self, url: str, t: float) -> int:
        """What this gateway had outstanding on ``url`` at wall time ``t`` (older than the history:
        the count at its start)."""
        h = self._history.get(url)
        if not h:
            return 0
        for when, n in reversed(h):
            if when <= t:
                return n
        return h[0][1]

    def queued_prefill(self, url: str) -> tuple[int, int]:
        """(requests, uncached characters) sent to ``url`` whose first byte has not come back."""
        return self._prefill.get(url, (0, 0))

    def others(self, ep: Endpoint) -> float:
        """Requests others had on ``ep``'s engine when its load was read: the sample less this
        gateway's own at that moment (all of it when the sample has no time)."""
        if ep.load <= 0:
            return 0.0
        cached = self._others.get(ep.url)
        if cached is not None and cached[0] == ep.load_at and cached[1] == ep.load:
            return cached[2]
        others = ep.load if ep.load_at <= 0 else max(0.0, ep.load - self.at(ep.url, ep.load_at))
        self._others[ep.url] = (ep.load_at, ep.load, others)
        return others

    def load(self, ep: Endpoint) -> float:
        return self.get(ep.url) + self.others(ep)


class PrefixTracker:
    """What one engine probably holds in its prefix cache: the block hashes this gateway sent it,
    least recently used dropped beyond ``capacity_blocks``. A request matches its leading blocks."""

    def __init__(self, capacity_blocks: int) -> None:
        self.capacity_blocks = max(capacity_blocks, 1)
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def match(self, blocks: Sequence[int]) -> int:
        n = 0
        for b in blocks:
            if b not in self._blocks:
                break
            n += 1
        return n

    def insert(self, blocks: Sequence[int]) -> None:
        for b in blocks:
            self._blocks[b] = None
            self._blocks.move_to_end(b)
        while len(self._blocks) > self.capacity_blocks:
            self._blocks.popitem(last=False)

    def __len__(self) -> int:
        return len(self._blocks)


class Router:
    """Base: subclasses implement ``choose``; ``endpoints`` is never empty."""

    name: ClassVar[RoutingPolicy]

    def __init__(self, cfg: RoutingSettings, outstanding: Outstanding | None = None, rng: random.Random | None = None):
        self.cfg = cfg
        self.outstanding = outstanding if outstanding is not None else Outstanding()
        self.rng = rng or random.Random()  # noqa: S311  # load balancing, not cryptography

    def context(self, model: str, body: dict[str, Any], session: str | None = None) -> RequestContext:
        """The keys this policy routes on, from the validated request body."""
        return RequestContext(model, session=session)

    async def choose(self, ctx: RequestContext, endpoints: Sequence[Endpoint]) -> Endpoint:
        raise NotImplementedError

    def prefill_estimate(self, ep: Endpoint, ctx: RequestContext) -> int:
        """Uncached prompt characters of ``ctx`` on ``ep`` (policies that estimate caches)."""
        return 0

    def prefilled(self, d: Dispatch) -> None:
        """The engine has prefilled ``d``'s prompt (policies that estimate caches)."""

    def dispatched(self, ep: Endpoint, ctx: RequestContext | None = None) -> Dispatch:
        """A request was sent to ``ep``; every call is matched by one ``completed``."""
        d = Dispatch(ep, self.prefill_estimate(ep, ctx), ctx.blocks) if ctx is not None else Dispatch(ep)
        self.outstanding.inc(ep.url, d.prefill_chars)
        return d

    def first_byte(self, d: Dispatch) -> None:
        """The engine answered the first byte: its prefill of the request is done."""
        if d.prefilling:
            self._unqueue(d)
            self.prefilled(d)

    def completed(self, d: Dispatch) -> None:
        """A request ended (answered, failed, or aborted: then its prompt is not presumed cached).
        Idempotent."""
        if d.done:
            return
        if d.prefilling:
            self._unqueue(d)
        d.done = True
        self.outstanding.dec(d.endpoint.url)

    def _unqueue(self, d: Dispatch) -> None:
        d.prefilling = False
        self.outstanding.prefilled(d.endpoint.url, d.prefill_chars)

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
    """Least estimated wait for the first token, cache misses charged (module docstring). A prompt
    shorter than one block falls back to the rendezvous hash of its head, with spill-over.

    Load balance is kept where it is cheap: a new conversation (no history yet) skips engines above
    ``routing.affinity_max_load_ratio`` × the mean outstanding requests. A conversation with history
    moves only when the prompt work queued on its engine outweighs the cache miss: requests that
    are only decoding do not delay its first token, and a count limit would move it at low load (two
    conversations on one of four engines is already 2× the mean) and pay its whole history again."""

    name = RoutingPolicy.PREFIX_AFFINITY

    def __init__(self, cfg: RoutingSettings, outstanding: Outstanding | None = None, rng: random.Random | None = None):
        super().__init__(cfg, outstanding, rng)
        self._trackers: OrderedDict[str, PrefixTracker] = OrderedDict()
        self._capacity_blocks = cfg.prefix_cache_chars // PREFIX_BLOCK_CHARS

    def key(self, ctx: RequestContext) -> str | None:
        return ctx.prefix or None

    def context(self, model: str, body: dict[str, Any], session: str | None = None) -> RequestContext:
        text, history = conversation_text(body)
        return RequestContext(
            model,
            prefix=affinity_prefix(body, self.cfg.prefix_chars),
            session=session,
            blocks=block_hashes(text),
            chars=len(text),
            history_blocks=history // PREFIX_BLOCK_CHARS,
        )

    def tracker(self, url: str) -> PrefixTracker:
        t = self._trackers.get(url)
        if t is None:
            t = self._trackers[url] = PrefixTracker(self._capacity_blocks)
            while len(self._trackers) > MAX_TRACKED_ENGINES:
                self._trackers.popitem(last=False)
        else:
            self._trackers.move_to_end(url)
        return t

    def cached_blocks(self, ctx: RequestContext, endpoints: Sequence[Endpoint], home: Endpoint) -> dict[str, int]:
        """Leading blocks of ``ctx`` each engine probably holds. When no engine is known to hold the
        conversation's history (another gateway replica served its earlier turns), ``home`` is
        presumed to: that is where a replica without better knowledge sent them."""
        held = {ep.url: self.tracker(ep.url).match(ctx.blocks) for ep in endpoints}
        if max(held.values()) < ctx.history_blocks:
            held[home.url] = max(held[home.url], ctx.history_blocks)
        return held

    async def choose(self, ctx: RequestContext, endpoints: Sequence[Endpoint]) -> Endpoint:
        if not ctx.blocks or len(endpoints) == 1:
            return await super().choose(ctx, endpoints)
        loads = {ep.url: self.outstanding.load(ep) for ep in endpoints}
        pool = list(endpoints)
        if not ctx.history_blocks:  # a new conversation: placed away from engines far above the mean (see class doc)
            limit = self.cfg.affinity_max_load_ratio * max(sum(loads.values()) / len(endpoints), 1.0)
            pool = [ep for ep in endpoints if loads[ep.url] <= limit] or pool
        home = _rendezvous(ctx.prefix, pool)  # ties go here, so replicas place a new conversation alike
        held = self.cached_blocks(ctx, pool, home)
        most = max(held.values())
        miss_weight = self.cfg.affinity_miss_weight

        def cost(ep: Endpoint) -> tuple[float, bool, float, str]:
            queued, queued_chars = self.outstanding.queued_prefill(ep.url)
            uncached = max(ctx.chars - held[ep.url] * PREFIX_BLOCK_CHARS, 0)
            missed = (most - held[ep.url]) * PREFIX_BLOCK_CHARS
            wait = queued_chars + (1 + queued) * uncached  # its own prefill delays the queued ones too
            return wait + miss_weight * missed, ep is not home, loads[ep.url], ep.replica_id

        return min(pool, key=cost)

    def prefill_estimate(self, ep: Endpoint, ctx: RequestContext) -> int:
        if not ctx.blocks:
            return 0
        return max(ctx.chars - self.tracker(ep.url).match(ctx.blocks) * PREFIX_BLOCK_CHARS, 0)

    def prefilled(self, d: Dispatch) -> None:
        if d.blocks:
            self.tracker(d.endpoint.url).insert(d.blocks)  # the engine's radix cache holds the prompt now


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


def conversation_text(body: dict[str, Any]) -> tuple[str, int]:
    """The text a request's prompt is rendered from, in order (each chat message's role and content,
    or the prompt), and how many of its leading characters come before the last assistant message
    (the part an earlier turn of the conversation already sent). Tools are left out."""
    msgs = body.get("messages")
    if not isinstance(msgs, list):
        prompt = body.get("prompt")
        return (prompt if isinstance(prompt, str) else repr(prompt)), 0
    turns = [m for m in msgs if isinstance(m, dict)]
    parts = [f"{m.get('role')}\0{_text(m.get('content'))}{_calls(m.get('tool_calls'))}\0" for m in turns]
    last_assistant = max((i for i, m in enumerate(turns) if m.get("role") == "assistant"), default=0)
    history = sum(len(p) for p in parts[:last_assistant])
    return "".join(parts), history


def block_hashes(text: str) -> tuple[int, ...]:
    """Chained hashes of each full ``PREFIX_BLOCK_CHARS`` block: equal exactly as far as two texts'
    leading blocks agree (a partial last block is never counted, as engines cache whole pages). The
    built-in hash suffices: the trackers live in this process."""
    out: list[int] = []
    h = 0
    for i in range(0, len(text) - PREFIX_BLOCK_CHARS + 1, PREFIX_BLOCK_CHARS):
        h = hash((h, text[i : i + PREFIX_BLOCK_CHARS]))
        out.append(h)
    return tuple(out)


def _calls(calls: object) -> str:
    return repr(calls) if calls else ""


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
