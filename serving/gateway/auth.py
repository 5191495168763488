"""API keys and per-key limits.

Keys come from ``gateway.api_keys.keys`` (inline or env as a JSON list) and
``gateway.api_keys.file``: a tenants file (key digests → tenant with weight, priority class and
limits; see :func:`parse_tenants`) or one key per line, ``#`` comments. The file is re-read when it
changes (a rotated Kubernetes Secret swaps a symlink). Only SHA-256 digests are kept in memory and
compared with ``hmac.compare_digest``. Auth is on when any key or a file is configured, or
``api_keys.required`` is set. Limits are token buckets per tenant (per key digest for plain keys,
each client address when auth is off): requests/min and tokens/min; tokens are estimated from the prompt
before the request and settled from the engine's usage afterwards.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from serving.config.settings import ApiKeySettings, LimitSettings
from serving.gateway.errors import ApiError

log = logging.getLogger("serving.gateway.auth")

_HEX_DIGEST = re.compile(r"^(?:sha256:)?([0-9a-f]{64})$")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Priority(StrEnum):
    INTERACTIVE = "interactive"  # served before batch when engines are saturated
    BATCH = "batch"


@dataclass(frozen=True)
class Tenant:
    """Who a key belongs to, with its share of saturated engines and its own limits (None: the
    gateway's ``gateway.limits``). ``id`` is the rate-limit identity."""

    id: str
    name: str
    weight: float = 1.0
    priority: Priority = Priority.INTERACTIVE
    requests_per_min: int | None = None
    tokens_per_min: int | None = None


ANONYMOUS = Tenant("anonymous", "anonymous")


DIGEST_PATTERN = r"^(sha256:)?[0-9a-fA-F]{64}$"


class TenantEntry(BaseModel):
    """One tenant of a tenants file; also the shape of the chart's ``secrets.tenants`` items
    (``serving deploy schema --write`` puts this model's JSON Schema into values.schema.json)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="unique tenant name, shown in logs, metrics and traces")
    weight: float = Field(1.0, gt=0, description="share of saturated engines (weighted fair queuing)")
    priority: Priority = Field(Priority.INTERACTIVE, description="interactive is served before batch when saturated")
    requests_per_min: int | None = Field(None, ge=1, description="this tenant's limit, instead of gateway.limits'")
    tokens_per_min: int | None = Field(None, ge=1, description="this tenant's limit, instead of gateway.limits'")
    keys: list[Annotated[str, StringConstraints(pattern=DIGEST_PATTERN)]] = Field(
        default_factory=list,
        description="SHA-256 digests of the tenant's API keys (64 hex digits, optionally 'sha256:'), never keys: "
        'printf %s "$KEY" | sha256sum',
    )


def _plain_key_tenant(d: str) -> Tenant:
    return Tenant(d, f"key-{d[:8]}")  # a digest prefix names it in logs; never the key


def parse_tenants(text: str, source: str) -> dict[str, Tenant]:
    """Key digest → tenant, from a tenants file or a plain key list.

    Tenants file (YAML)::

        tenants:
          - name: acme            # required, unique
            weight: 4             # share of saturated engines (default 1)
            priority: interactive # interactive | batch (default interactive)
            requests_per_min: 600 # optional: overrides gateway.limits for this tenant
            tokens_per_min: 200000
            keys: [sha256:<64 hex digits of SHA-256(key)>, ...]   # digests only: no key in the file

    Anything else is a plain key list: one key per line, ``#`` starts a comment; each key is its
    own tenant (weight 1, interactive)."""
    data: Any = None
    if "tenants:" in text:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{source}: not a valid tenants file: {exc}") from None
    if not (isinstance(data, dict) and "tenants" in data):
        keys = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        return {d: _plain_key_tenant(d) for d in (digest(k) for k in keys)}
    out: dict[str, Tenant] = {}
    names: set[str] = set()
    for i, t in enumerate(data.get("tenants") or []):
        where = f"{source}: tenants[{i}]"
        try:
            entry = TenantEntry.model_validate(t)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            field = ".".join(str(p) for p in err["loc"]) or "entry"
            why = err["msg"] if err["loc"][:1] != ("keys",) else "keys are SHA-256 digests (64 hex digits, " \
                "optionally 'sha256:'), never the keys themselves"  # fmt: skip
            raise ValueError(f"{where}: {field}: {why}") from None
        if entry.name in names:
            raise ValueError(f"{where}: tenant {entry.name!r} appears twice")
        names.add(entry.name)
        tenant = Tenant(f"tenant:{entry.name}", entry.name, entry.weight, entry.priority, entry.requests_per_min,
                        entry.tokens_per_min)  # fmt: skip
        for k in entry.keys:
            m = _HEX_DIGEST.match(k.strip().lower())
            assert m is not None  # the entry's pattern
            out[m.group(1)] = tenant
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"gateway.api_keys.file: cannot read {path}: {exc.strerror}") from None


def _signature(path: Path) -> tuple[str, int, int, int]:
    """Changes whenever the content may have: a rotated Kubernetes Secret swaps a symlink (new
    real path and inode); an edited file gets a new mtime or size."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return real, st.st_ino, st.st_mtime_ns, st.st_size


def load_key_digests(cfg: ApiKeySettings) -> list[str]:
    return sorted(_load(cfg))


def _load(cfg: ApiKeySettings) -> dict[str, Tenant]:
    inline = [k.get_secret_value().strip() for k in cfg.keys]
    found = {d: _plain_key_tenant(d) for d in (digest(k) for k in inline if k)}
    if cfg.file is not None:
        found.update(parse_tenants(_read(cfg.file), str(cfg.file)))
    return found


def key_id(who: str) -> str:
    """A key's public name in traces and logs: 12 hex digits of its digest (``anonymous`` without
    auth). Never the key, and too short a prefix to look it up by its full digest."""
    return who if who == "anonymous" else f"key-{who[:12]}"


class KeyStore:
    """Key digests → tenants. The file is re-read when it changed (checked at most every
    ``api_keys.reload_s``, on the request path): a revoked key is refused from then on. A file that
    cannot be read or parsed keeps the previous keys (and says so in the log, never with a key)."""

    def __init__(self, cfg: ApiKeySettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._cfg = cfg
        self._clock = clock
        self._tenants = _load(cfg)
        self._digests = sorted(self._tenants)
        self.enabled = bool(self._digests) or cfg.required or cfg.file is not None
        self._sig = self._file_signature()
        self._checked = clock()

    def _file_signature(self) -> tuple[str, int, int, int] | None:
        if self._cfg.file is None:
            return None
        try:
            return _signature(self._cfg.file)
        except OSError:
            return None

    def reload_if_changed(self, force: bool = False) -> bool:
        """Re-read the file if it changed; True when the key set was replaced."""
        now = self._clock()
        if self._cfg.file is None or (not force and now - self._checked < self._cfg.reload_s):
            return False
        self._checked = now
        sig = self._file_signature()
        if sig is None or sig == self._sig:
            return False
        try:
            tenants = _load(self._cfg)
        except ValueError as exc:
            log.warning("keeping the previous keys: %s", exc)
            return False
        self._sig = sig
        self._tenants = tenants
        self._digests = sorted(tenants)
        log.info("api keys reloaded from %s: %d keys, %d tenants", self._cfg.file, len(tenants),
                 len({t.id for t in tenants.values()}))  # fmt: skip
        return True

    def authenticate(self, authorization: str | None) -> str:
        """The key's digest, or ApiError 401."""
        if not self.enabled:
            return "anonymous"
        self.reload_if_changed()
        if not authorization:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "malformed Authorization header: expected 'Bearer <key>'", code="invalid_api_key")
        d = digest(token)
        found = False
        for known in self._digests:  # no early exit: time does not depend on which key matched
            found |= hmac.compare_digest(d, known)
        if not found:
            raise ApiError(401, "invalid API key", code="invalid_api_key")
        return d

    def tenant(self, who: str, client: str | None = None) -> Tenant:
        """The tenant of an authenticated digest. With auth off, each client address is its own
        rate-limit identity and fair-queuing tenant (``client:<address>``, named ``anonymous``),
        never one bucket shared by everyone; without an address, ``anonymous``."""
        if not self.enabled:
            return Tenant(f"client:{client}", ANONYMOUS.name) if client else ANONYMOUS
        return self._tenants.get(who, ANONYMOUS)


class TokenBucket:
    def __init__(self, per_min: float, clock: Callable[[], float]) -> None:
        self.capacity = float(per_min)
        self.rate_s = per_min / 60.0
        self.level = float(per_min)
        self.clock = clock
        self.t = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate_s)
        self.t = now

    def wait_s(self, amount: float) -> float:
        """0 if ``amount`` is available now, else seconds until it will be."""
        self._refill()
        need = min(amount, self.capacity) - self.level
        return 0.0 if need <= 0 else need / self.rate_s

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount  # may go negative: usage settled after the fact


class RateLimiter:
    # Identities come and go (client addresses with auth off): past this many buckets, the full
    # ones — indistinguishable from a new bucket — are dropped.
    MAX_BUCKETS = 4096

    def __init__(self, limits: LimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.rpm = limits.requests_per_min
        self.tpm = limits.tokens_per_min
        self.clock = clock
        self._req: dict[str, TokenBucket] = {}
        self._tok: dict[str, TokenBucket] = {}

    def _prune(self, buckets: dict[str, TokenBucket]) -> None:
        if len(buckets) >= self.MAX_BUCKETS:
            for who in [w for w, b in buckets.items() if b.wait_s(b.capacity) == 0.0]:
                del buckets[who]

    @property
    def enabled(self) -> bool:
        return self.rpm is not None or self.tpm is not None

    def admit(self, who: str, estimated_tokens: int, rpm: int | None = None, tpm: int | None = None) -> None:
        """Take one request and the token estimate, or raise 429 with Retry-After. ``rpm`` /
        ``tpm`` replace the gateway's limits for this identity (a tenant's own)."""
        waits: list[tuple[float, str]] = []
        rb = tb = None
        rpm = rpm if rpm is not None else self.rpm
        tpm = tpm if tpm is not None else self.tpm
        if rpm is not None:
            rb = self._req.get(who)
            if rb is None or rb.capacity != rpm:
                self._prune(self._req)
                rb = self._req[who] = TokenBucket(rpm, self.clock)
            waits.append((rb.wait_s(1), f"requests per minute ({rpm})"))
        if tpm is not None:
            tb = self._tok.get(who)
            if tb is None or tb.capacity != tpm:
                self._prune(self._tok)
                tb = self._tok[who] = TokenBucket(tpm, self.clock)
            waits.append((tb.wait_s(estimated_tokens), f"tokens per minute ({tpm})"))
        wait, what = max(waits, default=(0.0, ""))
        if wait > 0:
            raise ApiError(429, f"rate limit reached: {what}", code="rate_limit_exceeded", retry_after_s=wait)
        if rb is not None:
            rb.take(1)
        if tb is not None:
            tb.take(estimated_tokens)

    def settle(self, who: str, estimated_tokens: int, used_tokens: int) -> None:
        """Charge the difference between the estimate taken at admission and the real usage."""
        tb = self._tok.get(who)
        if tb is not None and used_tokens:
            tb.take(used_tokens - estimated_tokens)


def estimate_prompt_tokens(body_len: int) -> int:
    """A cheap upper-ish estimate before the engine tokenizes: ~4 bytes per token."""
    return max(1, body_len // 4)
