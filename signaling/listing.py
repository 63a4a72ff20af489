"""A room's listing from its host's WHIP query: ``?title=&category=&tags=a,b``, bounded and checked before any work.

Text shown to every visitor of the room list: so a title has a length bound and no control characters, a category
is one of ``rooms.categories`` and tags are a few short words.
"""

from __future__ import annotations

from collections.abc import Mapping

from relay.room import Listing
from signaling.auth import unfit_in_shown_text
from signaling.errors import HttpError

MAX_TITLE = 120
MAX_TAGS = 5
MAX_TAG = 24


def _clean(value: str, name: str, limit: int) -> str:
    value = value.strip()
    if len(value) > limit:
        raise HttpError(400, "bad_query", f"'{name}' is longer than {limit} characters")
    if any(unfit_in_shown_text(c) for c in value):
        raise HttpError(400, "bad_query", f"'{name}' holds control, surrogate or bidi-override characters")
    return value


def listing_from(query: Mapping[str, str], categories: tuple[str, ...]) -> Listing:
    title = _clean(query.get("title", ""), "title", MAX_TITLE)
    category = query.get("category", "").strip()
    if category and category not in categories:
        listed = ", ".join(categories) or "none configured"
        raise HttpError(400, "bad_query", f"'category' must be one of: {listed}")
    raw = query.get("tags", "")
    if len(raw) > MAX_TAGS * (MAX_TAG + 1):
        raise HttpError(400, "bad_query", f"'tags' is at most {MAX_TAGS} tags of {MAX_TAG} characters")
    tags = tuple(dict.fromkeys(t for t in (_clean(t, "tags", MAX_TAG) for t in raw.split(",")) if t))
    if len(tags) > MAX_TAGS:
        raise HttpError(400, "bad_query", f"'tags' is at most {MAX_TAGS} tags")
    return Listing(title, category, tags)
