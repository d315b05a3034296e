"""Instrument search: ranking, stable order, keyset pages, page tokens."""

from __future__ import annotations

import time

import pytest
from rapidfuzz import fuzz

from svc_marketdata.domain import paging
from svc_marketdata.domain.instruments import (
    _NOISE_WORDS,
    FUZZY_CUTOFF,
    FUZZY_MIN_WORD,
    FUZZY_WORD_CUTOFF,
    RECENT_QUERIES,
    TIER_EXACT_SYMBOL,
    TIER_FUZZY,
    TIER_NAME_WORD,
    TIER_SYMBOL_PREFIX,
    Instrument,
    InstrumentIndex,
    _fuzzy_tokens,
)
from svc_runtime.errors import InvalidArgument

INDEX = InstrumentIndex.build(
    [
        Instrument("TATA", "Tata Investment Corporation"),
        Instrument("TATAMOTORS", "Tata Motors Limited"),
        Instrument("TATASTEEL", "Tata Steel Limited"),
        Instrument("TCS", "Tata Consultancy Services"),
        Instrument("TITAN", "Titan Company"),
        Instrument("INFY", "Infosys Limited"),
        Instrument("M&M", "Mahindra & Mahindra"),
        Instrument("MOTHERSON", "Samvardhana Motherson International"),
    ]
)


def symbols(query: str, limit: int = 50) -> list[tuple[int, str]]:
    return [(h.tier, h.instrument.symbol) for h in INDEX.search(query, limit=limit).hits]


def test_exact_symbol_then_symbol_prefix_then_name_words() -> None:
    assert symbols("tata") == [
        (TIER_EXACT_SYMBOL, "TATA"),
        (TIER_SYMBOL_PREFIX, "TATAMOTORS"),
        (TIER_SYMBOL_PREFIX, "TATASTEEL"),
        (TIER_NAME_WORD, "TCS"),
    ]


def test_every_query_word_must_prefix_a_name_word() -> None:
    assert symbols("tata mot") == [(TIER_NAME_WORD, "TATAMOTORS")]
    assert symbols("mot") == [(TIER_SYMBOL_PREFIX, "MOTHERSON"), (TIER_NAME_WORD, "TATAMOTORS")]
    assert symbols("limited info") == [(TIER_NAME_WORD, "INFY")]
    assert symbols("zzz") == []


def test_symbols_with_punctuation_are_found() -> None:
    assert symbols("M&M")[0] == (TIER_EXACT_SYMBOL, "M&M")
    assert (TIER_NAME_WORD, "M&M") in symbols("mahindra")


def test_keyset_pages_cover_everything_once_in_order() -> None:
    everything = symbols("t")
    pages, after = [], None
    while True:
        page = INDEX.search("t", limit=2, after=after)
        pages.extend((h.tier, h.instrument.symbol) for h in page.hits)
        if page.next_after is None:
            break
        after = page.next_after
    assert pages == everything and len(everything) > 2


def test_a_cursor_survives_a_master_refresh() -> None:
    first = INDEX.search("tata", limit=2)
    refreshed = InstrumentIndex.build([*INDEX.by_symbol.values(), Instrument("TATAAAA", "Tata New")])
    rest = refreshed.search("tata", limit=10, after=first.next_after)
    shown = [h.instrument.symbol for h in first.hits] + [h.instrument.symbol for h in rest.hits]
    assert len(shown) == len(set(shown))  # nothing repeated


def test_page_tokens_are_bound_to_their_request() -> None:
    fp = paging.fingerprint("search", "TATA")
    token = paging.encode_token([1, "TATAMOTORS"], fp)
    assert paging.decode_token(token, fp) == [1, "TATAMOTORS"]
    assert paging.decode_token("", fp) is None
    with pytest.raises(InvalidArgument):
        paging.decode_token(token, paging.fingerprint("search", "INFY"))
    with pytest.raises(InvalidArgument):
        paging.decode_token("not-a-token!", fp)


@pytest.mark.parametrize(("requested", "expected"), [(0, 20), (5, 5), (100, 100), (1000, 100)])
def test_page_size_defaults_and_is_capped(requested: int, expected: int) -> None:
    assert paging.page_size(requested) == expected


def test_negative_page_size_is_rejected() -> None:
    with pytest.raises(InvalidArgument):
        paging.page_size(-1)


def test_type_ahead_over_fifty_thousand_instruments_is_fast_enough() -> None:
    big = InstrumentIndex.build(
        Instrument(f"S{n:05d}", f"Company {n} {['Steel', 'Motors', 'Bank', 'Power'][n % 4]} Limited")
        for n in range(50_000)
    )
    started = time.perf_counter()
    for query in ("s1", "s12", "s123", "motors", "bank lim", "company 4"):
        big.search(query, limit=20)
    # Generous bound (a shared, noisy machine): what matters is staying far from per-keystroke
    # budgets (~50 ms); the bench reports the real figure.
    assert (time.perf_counter() - started) / 6 < 0.5


def reference_ranking(index: InstrumentIndex, query: str) -> list[tuple[int, str]]:
    """The ranking rules written out plainly, to check the lazy implementation against."""
    from svc_marketdata.domain.instruments import name_words

    text = " ".join(query.split())
    upper, words = text.upper(), name_words(text)
    ranked = []
    for symbol, instrument in index.by_symbol.items():
        names = name_words(instrument.company_name)
        if symbol == upper:
            ranked.append((TIER_EXACT_SYMBOL, symbol))
        elif upper and " " not in upper and symbol.startswith(upper):
            ranked.append((TIER_SYMBOL_PREFIX, symbol))
        elif words and all(any(n.startswith(w) for n in names) for w in words):
            ranked.append((TIER_NAME_WORD, symbol))
        elif words:
            score = plain_fuzzy_score(words, _fuzzy_tokens(symbol, tuple(names)))
            if score is not None:
                ranked.append((TIER_FUZZY + round((100 - score) * 10), symbol))
    return sorted(ranked)


def plain_fuzzy_score(words: list[str], tokens: set[str]) -> float | None:
    """Each (meaningful) query word's best token similarity; every one at least the word
    cutoff, their mean at least the cutoff."""
    words = [w for w in words if w not in _NOISE_WORDS] or words
    scores = []
    for word in words:
        if len(word) < FUZZY_MIN_WORD or word.isdigit():
            best = 100.0 if any(t.startswith(word) for t in tokens) else 0.0
        else:
            best = max((fuzz.ratio(word, t) for t in tokens if not t.isdigit()), default=0.0)
        if best < FUZZY_WORD_CUTOFF:
            return None
        scores.append(best)
    mean = sum(scores) / len(scores)
    return mean if mean >= FUZZY_CUTOFF else None


@pytest.mark.parametrize("size", [300, 6000])  # sorted candidates, and the walk for broad queries
def test_paged_search_equals_the_plain_ranking(size: int) -> None:
    sectors = ["Steel", "Motors", "Bank", "Power", "Tata"]
    index = InstrumentIndex.build(
        [Instrument("TATA", "Tata Sons"), Instrument("C1", "Special One")]
        + [
            Instrument(f"C{n}{sectors[n % 5][0]}", f"Company {n} {sectors[n % 5]} Limited")
            for n in range(size)
        ]
    )
    for query in (
        "c",
        "c1",
        "C12",
        "company",
        "company 1",
        "tata",
        "limited steel",
        "steel",
        "s",
        "zz",
        "1 bank",
    ):
        expected = reference_ranking(index, query)
        paged: list[tuple[int, str]] = []
        after = None
        while True:
            page = index.search(query, limit=37, after=after)
            paged += [(h.tier, h.instrument.symbol) for h in page.hits]
            if page.next_after is None:
                break
            after = page.next_after
        assert paged == expected, query


FUZZY_INDEX = InstrumentIndex.build(
    [
        Instrument("INFY", "Infosys Limited"),
        Instrument("INFRATEL", "Bharti Infratel Limited"),
        Instrument("TCS", "Tata Consultancy Services Limited"),
        Instrument("TATAMOTORS", "Tata Motors Limited"),
        Instrument("HDFCBANK", "HDFC Bank Limited"),
        Instrument("RELIANCE", "Reliance Industries Limited"),
        Instrument("WIPRO", "Wipro Limited"),
    ]
)


def fuzzy(query: str) -> list[str]:
    return [h.instrument.symbol for h in FUZZY_INDEX.search(query, limit=10).hits]


def test_misspellings_and_initials_find_the_instrument_after_exact_matches() -> None:
    assert fuzzy("infsys") == ["INFY"]
    assert fuzzy("infosis") == ["INFY"]
    assert fuzzy("tata motrs") == ["TATAMOTORS"]
    assert fuzzy("relaince") == ["RELIANCE"]
    assert fuzzy("hdfc bnk") == ["HDFCBANK"]
    assert fuzzy("tcs") == ["TCS"]
    assert fuzzy("tcsl") == ["TCS"]  # initials of the name
    assert fuzzy("qwerty") == []
    hits = FUZZY_INDEX.search("infy", limit=10).hits
    assert (hits[0].tier, hits[0].instrument.symbol) == (TIER_EXACT_SYMBOL, "INFY")


def test_near_matches_rank_by_score_and_page_stably() -> None:
    hits = FUZZY_INDEX.search("infra", limit=10).hits
    assert [h.instrument.symbol for h in hits][:1] == ["INFRATEL"]
    everything = [(h.tier, h.instrument.symbol) for h in FUZZY_INDEX.search("limted", limit=50).hits]
    assert len(everything) == 7 and all(tier >= TIER_FUZZY for tier, _ in everything)
    assert everything == sorted(everything)
    pages, after = [], None
    while True:
        page = FUZZY_INDEX.search("limted", limit=3, after=after)
        pages.extend((h.tier, h.instrument.symbol) for h in page.hits)
        if page.next_after is None:
            break
        after = page.next_after
    assert pages == everything


def test_a_repeated_query_is_answered_from_the_index_s_recent_pages() -> None:
    index = InstrumentIndex.build(
        [Instrument("INFY", "Infosys Limited"), Instrument("TCS", "Tata Consultancy Services")]
    )
    first = index.search("infsys", limit=20)
    assert [h.instrument.symbol for h in first.hits] == ["INFY"]
    # Case and runs of spaces do not change the ranking, so they share the page.
    assert index.search("  INFSYS ", limit=20) is first
    assert index.search("infsys", limit=5) is not first  # another page size, another page
    # The oldest page goes once more queries than the bound were asked.
    for n in range(RECENT_QUERIES):
        index.search(f"q{n}", limit=20)
    again = index.search("infsys", limit=20)
    assert again is not first and again == first
    # A new master is a new index: its answers are its own.
    renamed = InstrumentIndex.build(
        [Instrument("INFY", "Infosys Technologies"), Instrument("INFS", "Infsys")]
    )
    assert renamed.search("infsys", limit=20).hits[0].instrument.symbol == "INFS"
