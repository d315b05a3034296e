"""The instrument master and the in-process search index over it.

The index is immutable: a new SecurityList from the exchange builds a new index that replaces
the old one in a single assignment, so readers never see a half-built master. Being
immutable, it keeps the pages of its recent queries: type-ahead and popular names repeat,
and a repeated query costs a dictionary look-up instead of a fuzzy match over every token.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import islice

from rapidfuzz import fuzz, process

from svc_runtime import names

# NSE tick size for equities; used when the exchange does not send one.
DEFAULT_TICK_SIZE = Decimal("0.05")
MAX_QUERY_LENGTH = 64

_WORD = re.compile(r"[a-z0-9]+")

# Search tiers, best first.
TIER_EXACT_SYMBOL = 0
TIER_SYMBOL_PREFIX = 1
TIER_NAME_WORD = 2
# Near spellings and abbreviations, best score first: tier TIER_FUZZY + (100 - score) × 10,
# so the (tier, symbol) keys of pages order them too.
TIER_FUZZY = 3
# A near match must score this (rapidfuzz's normalized similarity, 0–100) on average over
# the query's words, and every word at least FUZZY_WORD_CUTOFF.
FUZZY_CUTOFF = 75.0
FUZZY_WORD_CUTOFF = 70.0
# Query words shorter than this are too short to misspell: they must start a token.
FUZZY_MIN_WORD = 3
# Pages of recent queries each index keeps (a page is a few hundred bytes).
RECENT_QUERIES = 4096
_NOISE_WORDS = frozenset({"ltd", "limited", "the", "and", "of", "co", "inc", "corp"})


def normalize_symbol(text: str) -> str:
    return text.strip().upper()


def is_valid_symbol(symbol: str) -> bool:
    return bool(names.SYMBOL.match(symbol))


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
    hits: list[SearchHit]  # shared with later askers of the same query: read, never change
    # The sort key of the last hit when more results follow, else None.
    next_after: tuple[int, str] | None


@dataclass(frozen=True)
class InstrumentIndex:
    """Instruments by symbol, plus sorted symbol and name-word lists for prefix search."""

    by_symbol: dict[str, Instrument]
    _symbols: list[str] = field(repr=False)
    _words: list[tuple[str, str]] = field(repr=False)  # (name word, symbol), sorted
    _name_words: dict[str, tuple[str, ...]] = field(repr=False)
    # Fuzzy matching: every distinct token (symbol, name word, name initials) once, sorted,
    # the symbols each belongs to, each symbol's tokens, and which tokens are spelt (not
    # numbers: a number is matched by its prefix, it has no misspelling).
    _tokens: list[str] = field(repr=False, default_factory=list)
    _token_owners: list[list[str]] = field(repr=False, default_factory=list)
    _symbol_tokens: dict[str, list[int]] = field(repr=False, default_factory=dict)
    _spelt: list[int] = field(repr=False, default_factory=list)
    _spelt_tokens: list[str] = field(repr=False, default_factory=list)
    # (query as ranked, limit, after) → its page, least recently asked first.
    _recent: OrderedDict[tuple[str, int, tuple[int, str] | None], SearchPage] = field(
        repr=False, compare=False, default_factory=OrderedDict
    )

    @classmethod
    def build(cls, instruments: Iterable[Instrument]) -> InstrumentIndex:
        by_symbol = {i.symbol: i for i in instruments}
        name_words_of = {s: tuple(name_words(i.company_name)) for s, i in by_symbol.items()}
        words = sorted({(w, s) for s, ws in name_words_of.items() for w in ws})
        owners: dict[str, list[str]] = {}
        for symbol, ws in name_words_of.items():
            for token in _fuzzy_tokens(symbol, ws):
                owners.setdefault(token, []).append(symbol)
        tokens = sorted(owners)
        symbol_tokens: dict[str, list[int]] = {}
        for i, token in enumerate(tokens):
            for symbol in owners[token]:
                symbol_tokens.setdefault(symbol, []).append(i)
        spelt = [i for i, token in enumerate(tokens) if not token.isdigit()]
        return cls(
            by_symbol,
            sorted(by_symbol),
            words,
            name_words_of,
            tokens,
            [owners[t] for t in tokens],
            symbol_tokens,
            spelt,
            [tokens[i] for i in spelt],
        )

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
        with it, then instruments whose name has words starting with every query word, then
        near spellings and initials by score. Ties are ordered by symbol, so pages are
        stable; `after` is the previous page's last key.

        Hits are produced lazily in rank order and only a page (plus one, to know whether
        more follow) is taken, so a one-letter query over a large master costs a page, not
        the whole master."""
        # Ranking ignores case and runs of spaces, so the cache does too.
        key = (" ".join(query.split()).upper(), limit, after)
        recent = self._recent
        found = recent.get(key)
        if found is not None:
            recent.move_to_end(key)
            return found
        hits = list(islice(self._ranked(query, after or (-1, "")), limit + 1))
        page = hits[:limit]
        result = SearchPage(page, page[-1].key if len(hits) > limit and page else None)
        recent[key] = result
        if len(recent) > RECENT_QUERIES:
            recent.popitem(last=False)
        return result

    def _ranked(self, query: str, after: tuple[int, str]) -> Iterator[SearchHit]:
        text = " ".join(query.split())
        upper = text.upper()
        after_tier, after_symbol = after
        exact = upper if upper in self.by_symbol else None
        if exact is not None and (TIER_EXACT_SYMBOL, exact) > after:
            yield SearchHit(TIER_EXACT_SYMBOL, self.by_symbol[exact])
        prefix = upper if upper and " " not in upper else ""
        if prefix and after_tier <= TIER_SYMBOL_PREFIX:
            start = bisect_left(self._symbols, prefix)
            if after_tier == TIER_SYMBOL_PREFIX:
                start = max(start, bisect_right(self._symbols, after_symbol))
            for symbol in islice(self._symbols, start, None):
                if not symbol.startswith(prefix):
                    break
                if symbol != exact:
                    yield SearchHit(TIER_SYMBOL_PREFIX, self.by_symbol[symbol])
        words = name_words(text)
        if not words:
            return
        if after_tier <= TIER_NAME_WORD:
            yield from self._name_word_hits(
                words, exact, prefix, after_symbol if after_tier == TIER_NAME_WORD else ""
            )
        # Reached only when the tiers above did not fill the page.
        yield from self._fuzzy_hits(words, exact, prefix, after)

    def _fuzzy_hits(
        self, words: list[str], exact: str | None, prefix: str, after: tuple[int, str]
    ) -> Iterator[SearchHit]:
        for tier, symbol in self._fuzzy(words):
            if (tier, symbol) <= after:
                continue
            if symbol == exact or (prefix and symbol.startswith(prefix)):
                continue
            if _all_words_match(words, self._name_words[symbol]):
                continue  # ranked higher
            yield SearchHit(tier, self.by_symbol[symbol])

    def _name_word_hits(
        self, words: list[str], exact: str | None, prefix: str, floor: str
    ) -> Iterator[SearchHit]:
        # Candidates: symbols with a name word starting with the most selective query word
        # (the one whose prefix range is narrowest).
        low, high = min((self._word_range(w) for w in words), key=lambda r: r[1] - r[0])
        if high - low <= _SORT_LIMIT:
            ordered: Iterable[str] = sorted({s for _, s in self._words[low:high] if s > floor})
        else:  # a broad query: walk the sorted symbols (most match) and stop after a page
            ordered = islice(self._symbols, bisect_right(self._symbols, floor) if floor else 0, None)
        for symbol in ordered:
            if symbol == exact or (prefix and symbol.startswith(prefix)):
                continue  # already ranked higher
            if _all_words_match(words, self._name_words[symbol]):
                yield SearchHit(TIER_NAME_WORD, self.by_symbol[symbol])

    def _fuzzy(self, words: list[str]) -> list[tuple[int, str]]:
        """(tier, symbol) of near matches, best first: each query word scored against the
        tokens by rapidfuzz (normalized Indel similarity), the best token per symbol kept.
        Candidates are the symbols of the most selective word; the others are looked up in
        each candidate's own few tokens."""
        words = [w for w in words if w not in _NOISE_WORDS] or words
        scores = [self._token_scores(word) for word in words]
        if not all(scores):
            return []
        selective = min(scores, key=lambda found: sum(len(self._token_owners[i]) for i in found))
        candidates = {symbol for i in selective for symbol in self._token_owners[i]}
        ranked = []
        for symbol in candidates:
            own = self._symbol_tokens[symbol]
            best = [max(found.get(i, 0.0) for i in own) for found in scores]
            if min(best) < FUZZY_WORD_CUTOFF:
                continue
            score = sum(best) / len(best)
            if score >= FUZZY_CUTOFF:
                ranked.append((TIER_FUZZY + round((100 - score) * 10), symbol))
        return sorted(ranked)

    def _token_scores(self, word: str) -> dict[int, float]:
        """Token index → similarity to `word`, for the tokens at least FUZZY_WORD_CUTOFF alike
        (a short word or a number: the tokens it starts, at 100)."""
        if len(word) < FUZZY_MIN_WORD or word.isdigit():
            low = bisect_left(self._tokens, word)
            high = bisect_left(self._tokens, word + _MAX_CHAR)
            return dict.fromkeys(range(low, high), 100.0)
        spelt = self._spelt
        matches = process.extract(
            word, self._spelt_tokens, scorer=fuzz.ratio, score_cutoff=FUZZY_WORD_CUTOFF, limit=None
        )
        return {spelt[i]: score for _, score, i in matches}

    def _word_range(self, prefix: str) -> tuple[int, int]:
        """Where (word, symbol) pairs with words starting with `prefix` sit in `_words`."""
        return bisect_left(self._words, (prefix, "")), bisect_left(self._words, (prefix + _MAX_CHAR, ""))


# Sorting up to this many name-word candidates beats walking every symbol.
_SORT_LIMIT = 2048
_MAX_CHAR = "\U0010ffff"


def _fuzzy_tokens(symbol: str, words: tuple[str, ...]) -> set[str]:
    """What a near spelling is compared with: the symbol, each name word, and the name's
    initials (with and without a trailing "limited"), so `tcs` finds Tata Consultancy
    Services and `infsys` Infosys."""
    tokens = {symbol.lower(), *words}
    initials = "".join(w[0] for w in words)
    if len(initials) >= 2:
        tokens.add(initials)
    meaningful = [w for w in words if w not in _NOISE_WORDS]
    if len(meaningful) >= 2:
        tokens.add("".join(w[0] for w in meaningful))
    return tokens


def _all_words_match(query_words: list[str], words: tuple[str, ...]) -> bool:
    return all(any(w.startswith(q) for w in words) for q in query_words)
