import jwt
import pytest

from signaling.auth import AuthError, Forbidden, TokenService, bearer_token

SECRET = "0123456789abcdef0123456789abcdef"


def service() -> TokenService:
    return TokenService(SECRET, "cherry-gateway", 60)


def test_minted_token_round_trips_its_grant():
    grant = service().verify(service().mint("room1", "viewer", "v1"))
    assert (grant.room, grant.role, grant.identity) == ("room1", "viewer", "v1")


def test_expired_token_is_rejected():
    token = service().mint("r", "host", ttl=-60)
    with pytest.raises(AuthError, match="expired"):
        service().verify(token)


def test_token_signed_with_another_secret_is_rejected():
    other = TokenService("another-secret-value-another-secret", "cherry-gateway", 60).mint("r", "host")
    with pytest.raises(AuthError, match="invalid token"):
        service().verify(other)


def test_token_without_room_grant_is_rejected():
    token = jwt.encode({"iss": "cherry-gateway", "sub": "x", "exp": 2**40}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError, match="missing room"):
        service().verify(token)


def test_none_algorithm_is_rejected():
    token = jwt.encode({"iss": "cherry-gateway", "sub": "x", "room": "r", "role": "admin", "exp": 2**40},
                       None, algorithm="none")
    with pytest.raises(AuthError):
        service().verify(token)


def test_grants_follow_role_rank_and_room():
    host = service().verify(service().mint("r", "host"))
    host.at_least("r", "viewer")
    host.at_least("r", "guest")
    with pytest.raises(Forbidden, match="room"):
        host.at_least("other", "viewer")
    viewer = service().verify(service().mint("r", "viewer"))
    with pytest.raises(Forbidden, match="may not"):
        viewer.at_least("r", "guest")
    admin = service().verify(service().mint("r", "admin"))
    admin.at_least("anything", "host")


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "token"])
def test_bearer_header_must_be_well_formed(header):
    with pytest.raises(AuthError):
        bearer_token(header)
