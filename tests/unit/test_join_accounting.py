"""Join outcomes and the error breakdown: a planned drain is not a failed join; error labels stay bounded."""

from __future__ import annotations

from gateway.metrics import ErrorCounts, JoinOutcomes, join_outcome


def test_a_drained_offer_is_neither_accepted_nor_failed() -> None:
    joins = JoinOutcomes()
    joins.record("POST", "/whep/r1", 201)
    joins.record("POST", "/whep/r1", 503, "draining")
    joins.record("POST", "/whep/r1", 503, "draining")
    assert joins.success_ratio_parts("whep") == (1, 1)
    joins.record("POST", "/whep/r1", 503, "capacity")
    assert joins.success_ratio_parts("whep") == (1, 2)
    assert joins.outcomes[("whep", "drained")] == 2 and joins.outcomes[("whep", "failed")] == 1


def test_outcomes_by_status_and_code() -> None:
    assert join_outcome(201, None) == "accepted"
    assert join_outcome(307, None) == "redirected"
    assert join_outcome(503, "draining") == "drained"
    assert join_outcome(503, None) == "failed"
    assert join_outcome(429, "rate_limited") == "failed"
    assert join_outcome(409, "host_already_live") == "failed"
    assert join_outcome(401, "unauthorized") == "refused"
    assert join_outcome(404, "room_not_live") == "refused"


def test_error_labels_stay_bounded_whatever_the_codes() -> None:
    errors = ErrorCounts(cap=4)
    errors.record("/whep/r1", 401, "unauthorized")
    errors.record("/whep/r2", 401, "unauthorized")
    errors.record("/ws/r1", 503, "draining")
    errors.record("/nowhere/at/all", 404, "not_found")
    errors.record("/api/rooms", 400, "NOT A CODE <script>")
    errors.record("/whip/r1", 201, None)  # not an error
    assert errors.counts == {("whep", 401, "unauthorized"): 2, ("ws", 503, "draining"): 1,
                             ("other", 404, "not_found"): 1, ("api", 400, "other"): 1}
    for i in range(100):  # past the cap: folded into one series per status
        errors.record("/whep/r1", 409, f"code_{i}")
    assert errors.counts[("other", 409, "other")] == 100 and len(errors.counts) == 5
