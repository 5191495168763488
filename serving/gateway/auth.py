"""API keys and per-key limits.

Keys come from ``gateway.api_keys.keys`` (inline or env as a JSON list) and
``gateway.api_keys.file`` (one key per line, ``#`` comments; a mounted Kubernetes Secret). Only
SHA-256 digests are kept in memory and compared with ``hmac.compare_digest``. Auth is on when any
key is configured or ``api_keys.required`` is set. Limits are token buckets per key digest
(``anonymous`` when auth is off): requests/min and tokens/min; tokens are estimated from the
prompt before the request and settled from the engine's usage afterwards.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

from serving.config.settings import ApiKeySettings, LimitSettings
from serving.gateway.errors import ApiError


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_key_digests(cfg: ApiKeySettings) -> list[str]:
    keys = [k.get_secret_value().strip() for k in cfg.keys]
    if cfg.file is not None:
        try:
            text = cfg.file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"gateway.api_keys.file: cannot read {cfg.file}: {exc.strerror}") from None
        keys += [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return sorted({digest(k) for k in keys if k})


def key_id(who: str) -> str:
    """A key's public name in traces and logs: 12 hex digits of its digest (``anonymous`` without
    auth). Never the key, and too short a prefix to look it up by its full digest."""
    return who if who == "anonymous" else f"key-{who[:12]}"


class KeyStore:
    def __init__(self, cfg: ApiKeySettings) -> None:
        self._digests = load_key_digests(cfg)
        self.enabled = bool(self._digests) or cfg.required

    def authenticate(self, authorization: str | None) -> str:
        """The key's digest (the rate-limit identity), or ApiError 401."""
        if not self.enabled:
            return "anonymous"
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
    def __init__(self, limits: LimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.rpm = limits.requests_per_min
        self.tpm = limits.tokens_per_min
        self.clock = clock
        self._req: dict[str, TokenBucket] = {}
        self._tok: dict[str, TokenBucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rpm is not None or self.tpm is not None

    def admit(self, who: str, estimated_tokens: int) -> None:
        """Take one request and the token estimate, or raise 429 with Retry-After."""
        waits: list[tuple[float, str]] = []
        rb = tb = None
        if self.rpm is not None:
            rb = self._req.setdefault(who, TokenBucket(self.rpm, self.clock))
            waits.append((rb.wait_s(1), f"requests per minute ({self.rpm})"))
        if self.tpm is not None:
            tb = self._tok.setdefault(who, TokenBucket(self.tpm, self.clock))
            waits.append((tb.wait_s(estimated_tokens), f"tokens per minute ({self.tpm})"))
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
