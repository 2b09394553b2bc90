"""Prefix caching: the computed KV of earlier prompts (a system prompt, the earlier turns of a chat),
kept per loaded model so a request that starts the same way prefills only what follows.

`PrefixCache` is the index both decoders share: entries keyed by their token ids, looked up by the
longest common prefix, dropped least recently used first to stay under a byte budget. What an entry
holds (the transformers decoder: per-layer key and value tensors; llama.cpp: a sequence's saved
state) is the decoder's business; the cache only counts its bytes. A `space` keeps apart entries
that the same tokens do not make interchangeable: KV computed under one LoRA adapter is not what
another adapter (or the base model) computes, so each adapter's rows match only their own.
"""

import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from engines.contract import PREFIX_CACHE_MB

MIN_TOKENS = 16  # a shorter shared start (a BOS, a template's first tag) is not worth a separate prefill


def prefix_cache_bytes(config: Mapping[str, Any]) -> int:
    """The prefix cache an LLM engine's config asks for (`prefix_cache_mb`), in bytes; 0: none."""
    return int(config.get("prefix_cache_mb", PREFIX_CACHE_MB) * 2**20)


class Entry:
    __slots__ = ("ids", "value", "nbytes", "space")

    def __init__(self, ids: list[int], value: Any, nbytes: int, space: Hashable = None) -> None:
        self.ids, self.value, self.nbytes, self.space = ids, value, nbytes, space


class PrefixCache:
    """Computed prefixes of one model, at most `budget_bytes` in all. `match(ids)` finds the entry
    sharing the longest start with `ids` (never all of it: the last prompt token is always computed,
    for its logits); `add(ids, value, nbytes)` keeps a computed sequence. Each takes a `space` (the
    LoRA adapter the KV was computed under; None: the base model) and sees only that space's entries.
    `hits`, `misses` and `saved_tokens` count lookups since load."""

    def __init__(self, budget_bytes: int, *, min_tokens: int = MIN_TOKENS) -> None:
        self.budget_bytes = budget_bytes
        self.min_tokens = min_tokens
        # by (space, ids), least recently used first
        self.entries: OrderedDict[tuple[Hashable, tuple[int, ...]], Entry] = OrderedDict()
        self.used_bytes = 0
        self.hits = self.misses = self.saved_tokens = 0
        self._lock = threading.Lock()  # the scheduler's thread writes, the heartbeat reads

    def match(self, ids: Sequence[int], space: Hashable = None) -> tuple[Entry | None, int]:
        """(entry, tokens it covers) for the longest shared start of at least `min_tokens`, or (None, 0)."""
        best, best_length = None, 0
        limit = len(ids) - 1
        with self._lock:
            for (entry_space, key), entry in self.entries.items():
                length = _common(key, ids, limit) if entry_space == space else 0
                if length > best_length:
                    best, best_length = entry, length
            if best is None or best_length < self.min_tokens:
                self.misses += 1
                return None, 0
            self.entries.move_to_end((space, tuple(best.ids)))
            self.hits += 1
            self.saved_tokens += best_length
        return best, best_length

    def covers(self, ids: Sequence[int], space: Hashable = None) -> bool:
        """Whether an entry already holds all of `ids` (so adding them would store nothing new)."""
        with self._lock:
            return any(entry_space == space and len(key) >= len(ids) and key[: len(ids)] == tuple(ids)
                       for entry_space, key in self.entries)

    def add(self, ids: Sequence[int], value: Any, nbytes: int, space: Hashable = None) -> bool:
        """Keep `value` (the KV of `ids`, `nbytes` large). Entries it extends are dropped; least recently
        used ones go until it fits; one larger than the whole budget is not kept. Returns whether it was."""
        key = tuple(ids)
        if len(key) < self.min_tokens or nbytes > self.budget_bytes:
            return False
        with self._lock:
            for old in [old for old in self.entries
                        if old[0] == space and len(old[1]) <= len(key) and key[: len(old[1])] == old[1]]:
                self.used_bytes -= self.entries.pop(old).nbytes
            while self.entries and self.used_bytes + nbytes > self.budget_bytes:
                _, evicted = self.entries.popitem(last=False)
                self.used_bytes -= evicted.nbytes
            self.entries[(space, key)] = Entry(list(ids), value, nbytes, space)
            self.used_bytes += nbytes
        return True

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()
            self.used_bytes = 0

    def describe(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self.entries), "bytes": self.used_bytes, "budget_bytes": self.budget_bytes,
                    "hits": self.hits, "misses": self.misses, "saved_tokens": self.saved_tokens}


def _common(key: tuple[int, ...], ids: Sequence[int], limit: int) -> int:
    """How many leading tokens `key` and `ids` share, at most `limit`."""
    length = min(len(key), limit)
    if length <= 0 or key[0] != ids[0]:
        return 0
    if tuple(ids[:length]) == key[:length]:
        return length
    low, high = 0, length  # the shared length is in [low, high): bisect on equal slices (C speed each)
    while high - low > 1:
        middle = (low + high) // 2
        if tuple(ids[:middle]) == key[:middle]:
            low = middle
        else:
            high = middle
    return low
