"""A per-instance prefix cache on page hashes: radix-tree semantics at page granularity, LRU eviction."""

from __future__ import annotations

from collections import OrderedDict

from serving.engines.simulator.text import PAGE_TOKENS


class PrefixCache:
    """Maps chained page hashes to presence; a prompt hits as many leading pages as are cached."""

    def __init__(self, capacity_tokens: int) -> None:
        self.capacity_pages = max(0, capacity_tokens // PAGE_TOKENS)
        self._pages: OrderedDict[int, None] = OrderedDict()
        self.hit_tokens = 0
        self.lookup_tokens = 0
        self.hits = 0
        self.misses = 0

    def match(self, hashes: list[int]) -> int:
        """Leading cached tokens of a prompt with these page hashes (touches them as recently used)."""
        n = 0
        for h in hashes:
            if h not in self._pages:
                break
            self._pages.move_to_end(h)
            n += 1
        return n * PAGE_TOKENS

    def record(self, prompt_tokens: int, cached: int) -> None:
        self.lookup_tokens += prompt_tokens
        self.hit_tokens += cached
        if cached:
            self.hits += 1
        else:
            self.misses += 1

    def insert(self, hashes: list[int]) -> None:
        for h in hashes:
            self._pages[h] = None
            self._pages.move_to_end(h)
        while len(self._pages) > self.capacity_pages:
            self._pages.popitem(last=False)

    def flush(self) -> None:
        self._pages.clear()

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.lookup_tokens if self.lookup_tokens else 0.0

    @property
    def size_tokens(self) -> int:
        return len(self._pages) * PAGE_TOKENS
