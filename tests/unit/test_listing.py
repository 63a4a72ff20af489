"""A room's listing from the host's WHIP query: what passes, what is refused, and that nothing else escapes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.room import Listing
from signaling.errors import HttpError
from signaling.listing import MAX_TAG, MAX_TAGS, MAX_TITLE, listing_from

CATEGORIES = ("Music", "Just chatting")


def test_a_listing_is_read_trimmed_and_deduplicated() -> None:
    query = {"title": "  Night set ", "category": "Music", "tags": "acoustic, chill,,acoustic , 夜"}
    assert listing_from(query, CATEGORIES) == Listing("Night set", "Music", ("acoustic", "chill", "夜"))
    assert listing_from({}, CATEGORIES) == Listing()


@pytest.mark.parametrize("query", [
    {"category": "Cooking"},  # not a configured category
    {"category": "music"},  # categories are names as configured
    {"title": "x" * (MAX_TITLE + 1)},
    {"title": "bell\x07"},
    {"tags": ",".join(f"t{i}" for i in range(MAX_TAGS + 1))},
    {"tags": "y" * (MAX_TAG + 1)},
    {"tags": "ok,\x00"},
    {"tags": "a," * 200},
], ids=lambda q: next(iter(q)))
def test_a_bad_listing_is_a_400_naming_its_field(query: dict[str, str]) -> None:
    with pytest.raises(HttpError) as refused:
        listing_from(query, CATEGORIES)
    assert refused.value.status == 400 and refused.value.code == "bad_query"
    assert next(iter(query)) in refused.value.message


@given(st.dictionaries(st.sampled_from(["title", "category", "tags", "other"]), st.text(max_size=300)))
def test_any_query_gives_a_bounded_listing_or_a_400(query: dict[str, str]) -> None:
    try:
        listing = listing_from(query, CATEGORIES)
    except HttpError as refused:
        assert refused.status == 400
        return
    assert len(listing.title) <= MAX_TITLE and len(listing.tags) <= MAX_TAGS
    assert listing.category in ("", *CATEGORIES)
    assert all(0 < len(t) <= MAX_TAG and "," not in t for t in listing.tags)
