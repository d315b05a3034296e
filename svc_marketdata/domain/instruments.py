"""The instrument master and the in-process search index over it.

The index is immutable: a new SecurityList from the exchange builds a new index that replaces
the old one in a single assignment, so readers never see a half-built master.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

# NSE tick size for equities; used when the exchange does not send one.
DEFAULT_TICK_SIZE = Decimal("0.05")
MAX_SYMBOL_LENGTH = 32
MAX_QUERY_LENGTH = 64

# NSE-like symbols: upper-case letters and digits, with `&` and `-` (M&M, BAJAJ-AUTO).
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9&_.-]{0,31}$")
_WORD = re.compile(r"[a-z0-9]+")

# Search tiers, best first.
TIER_EXACT_SYMBOL = 0
TIER_SYMBOL_PREFIX = 1
TIER_NAME_WORD = 2


def normalize_symbol(text: str) -> str:
    return text.strip().upper()


def is_valid_symbol(symbol: str) -> bool:
    return bool(_SYMBOL.match(symbol))


def name_words(text: str) -> list[str]:
    """Lower-case words of a company name or query ("Tata Motors Ltd." → tata, motors, ltd)."""
    return _WORD.findall(text.lower())


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str
    company_name: str
    sector: str = ""
    tick_size: Decimal = DEFAULT_TICK_SIZE
    lot_size: int = 1
    previous_close: Decimal | None = None
    isin: str = ""


@dataclass(frozen=True, slots=True)
class SearchHit:
    tier: int
    instrument: Instrument

    @property
    def key(self) -> tuple[int, str]:
        return (self.tier, self.instrument.symbol)


@dataclass(frozen=True, slots=True)
class SearchPage:
    hits: list[SearchHit]
    # The sort key of the last hit when more results follow, else None.
    next_after: tuple[int, str] | None


@dataclass(frozen=True)
class InstrumentIndex:
    """Instruments by symbol, plus sorted symbol and name-word lists for prefix search."""

    by_symbol: dict[str, Instrument]
    _symbols: list[str] = field(repr=False)
    _words: list[tuple[str, str]] = field(repr=False)  # (name word, symbol), sorted

    @classmethod
    def build(cls, instruments: Iterable[Instrument]) -> InstrumentIndex:
        by_symbol = {i.symbol: i for i in instruments}
        words = sorted({(w, i.symbol) for i in by_symbol.values() for w in name_words(i.company_name)})
        return cls(by_symbol, sorted(by_symbol), words)

    @classmethod
    def empty(cls) -> InstrumentIndex:
        return cls.build(())

    def __len__(self) -> int:
        return len(self.by_symbol)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self.by_symbol

    def get(self, symbol: str) -> Instrument | None:
        return self.by_symbol.get(symbol)

    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    def split_known(self, symbols: Sequence[str]) -> tuple[list[str], list[str]]:
        """(known, unknown), each deduplicated, in first-seen order."""
        known: dict[str, None] = {}
        unknown: dict[str, None] = {}
        for symbol in symbols:
            (known if symbol in self.by_symbol else unknown)[symbol] = None
        return list(known), list(unknown)

    def search(self, query: str, *, limit: int, after: tuple[int, str] | None = None) -> SearchPage:
        """Instruments matching `query`, best first: the exact symbol, then symbols starting
        with it, then instruments whose name has words starting with every query word. Ties
        are ordered by symbol, so pages are stable; `after` is the previous page's last key."""
        hits = self._ranked(query)
        start = 0
        if after is not None:
            start = bisect_left([h.key for h in hits], after)
            if start < len(hits) and hits[start].key == after:
                start += 1
        page = hits[start : start + limit]
        more = start + limit < len(hits)
        return SearchPage(page, page[-1].key if more and page else None)

    def _ranked(self, query: str) -> list[SearchHit]:
        text = " ".join(query.split())
        upper = text.upper()
        seen: set[str] = set()
        hits: list[SearchHit] = []
        if upper in self.by_symbol:
            hits.append(SearchHit(TIER_EXACT_SYMBOL, self.by_symbol[upper]))
            seen.add(upper)
        if upper and " " not in upper:
            for symbol in self._prefixed(self._symbols, upper):
                if symbol not in seen:
                    hits.append(SearchHit(TIER_SYMBOL_PREFIX, self.by_symbol[symbol]))
                    seen.add(symbol)
        words = name_words(text)
        if words:
            # Candidates from the most selective (longest) word, then every word must match.
            pivot = max(words, key=len)
            candidates = {symbol for _, symbol in self._word_prefixed(pivot)} - seen
            matched = [
                s for s in candidates if _all_words_match(words, name_words(self.by_symbol[s].company_name))
            ]
            hits.extend(SearchHit(TIER_NAME_WORD, self.by_symbol[s]) for s in sorted(matched))
        return hits

    @staticmethod
    def _prefixed(sorted_items: list[str], prefix: str) -> list[str]:
        start = bisect_left(sorted_items, prefix)
        end = start
        while end < len(sorted_items) and sorted_items[end].startswith(prefix):
            end += 1
        return sorted_items[start:end]

    def _word_prefixed(self, prefix: str) -> list[tuple[str, str]]:
        start = bisect_left(self._words, (prefix, ""))
        end = start
        while end < len(self._words) and self._words[end][0].startswith(prefix):
            end += 1
        return self._words[start:end]


def _all_words_match(query_words: list[str], words: list[str]) -> bool:
    return all(any(w.startswith(q) for w in words) for q in query_words)
