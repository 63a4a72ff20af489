import jwt
import pytest

from signaling.auth import (
    AuthError,
    Forbidden,
    SecretError,
    Secrets,
    TokenService,
    bearer_token,
    resolve_secrets,
    token_service,
)
from signaling.config import AuthConfig

SECRET = "0123456789abcdef0123456789abcdef"


def service() -> TokenService:
    return TokenService(SECRET, "cherry-gateway", 60)


def test_minted_token_round_trips_its_grant():
    grant = service().verify(service().mint("room1", "viewer", "v1"))
    assert (grant.room, grant.role, grant.identity) == ("room1", "viewer", "v1")


def test_display_name_travels_in_the_name_claim_and_is_bounded():
    token = service().mint("room1", "viewer", "u-4821", name="Ann 🌸")
    assert jwt.decode(token, SECRET, algorithms=["HS256"], issuer="cherry-gateway")["name"] == "Ann 🌸"
    assert service().verify(token).name == "Ann 🌸"
    assert service().verify(service().mint("room1", "viewer", "u-4821")).name == ""
    for good in ("محمد\u200cرضا", "👨\u200d👩\u200d👧", "Ann\u00a0Lee"):  # joiners, no-break space
        assert service().verify(service().mint("room1", "viewer", "u", name=good)).name == good
    for bad in ("n" * 65, "line\nbreak", " padded", 42, "abc\u202edcba", "\ud800"):
        claims = {"iss": "cherry-gateway", "sub": "u", "room": "r", "role": "viewer", "exp": 2**31, "name": bad}
        with pytest.raises(AuthError, match="name"):
            service().verify(jwt.encode(claims, SECRET, algorithm="HS256"))
    with pytest.raises(ValueError):
        service().mint("r", "viewer", name="x" * 65)
    huge = {"iss": "cherry-gateway", "sub": "u" * 129, "room": "r", "role": "viewer", "exp": 2**31}
    with pytest.raises(AuthError, match="sub must be"):
        service().verify(jwt.encode(huge, SECRET, algorithm="HS256"))


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


# -- secrets: where they come from, and rotation -----------------------------------------------

OLD = "old-secret-0123456789abcdef-0123456789"
NEW = "new-secret-0123456789abcdef-0123456789"
OTHER = "someone-else-0123456789abcdef-01234567"


def rotating(previous: tuple[str, ...], environ: dict[str, str] | None = None) -> TokenService:
    return token_service(AuthConfig(secret=NEW, previous_secrets=previous), dev=False, environ=environ or {})


def test_token_of_the_old_secret_is_accepted_during_rotation_and_refused_after():
    old_token = token_service(AuthConfig(secret=OLD), dev=False).mint("r", "viewer", "early-bird")
    during = rotating(("env:CHERRY_OLD_SECRET",), {"CHERRY_OLD_SECRET": OLD})
    assert during.verify(old_token).identity == "early-bird"
    new_token = during.mint("r", "viewer", "late-comer")
    with pytest.raises(AuthError):  # minted with the new secret, not the old one
        TokenService(OLD, "cherry-gateway", 60).verify(new_token)
    after = rotating(())
    assert after.verify(new_token).identity == "late-comer"
    with pytest.raises(AuthError, match="signature"):
        after.verify(old_token)


def test_wrong_secret_is_refused_during_rotation_too():
    stranger = TokenService(OTHER, "cherry-gateway", 60).mint("r", "host")
    with pytest.raises(AuthError, match="invalid token"):
        rotating((OLD,)).verify(stranger)


def test_expired_token_of_a_previous_secret_is_refused_as_expired():
    expired = TokenService(OLD, "cherry-gateway", 60).mint("r", "host", ttl=-60)
    with pytest.raises(AuthError, match="expired"):
        rotating((OLD,)).verify(expired)


def test_wrong_issuer_is_refused_even_with_a_known_secret():
    foreign = TokenService(OLD, "someone-else", 60).mint("r", "host")
    with pytest.raises(AuthError, match="issuer"):
        rotating((OLD,)).verify(foreign)


def test_current_secret_from_literal_env_or_file(tmp_path):
    path = tmp_path / "secret"
    path.write_text(f"  {NEW}\n\n")
    env = {"CHERRY_SECRET": NEW}
    assert resolve_secrets(AuthConfig(secret=NEW), dev=False).current == NEW
    assert resolve_secrets(AuthConfig(secret_env="CHERRY_SECRET"), dev=False, environ=env).current == NEW
    assert resolve_secrets(AuthConfig(secret_file=str(path)), dev=False).current == NEW


def test_previous_secrets_are_literal_env_or_file(tmp_path):
    path = tmp_path / "older"
    path.write_text(OTHER + "\n")
    resolved = resolve_secrets(AuthConfig(secret=NEW, previous_secrets=(OLD, "env:PREV", f"file:{path}")),
                               dev=False, environ={"PREV": "prev-secret-0123456789abcdef-012345678"})
    assert resolved.previous == (OLD, "prev-secret-0123456789abcdef-012345678", OTHER)


@pytest.mark.parametrize("auth, message", [
    (AuthConfig(secret=NEW, secret_env="X"), "auth.secret and auth.secret_env: set only one of"),
    (AuthConfig(secret_env="X", secret_file="/f"), "auth.secret_env and auth.secret_file: set only one of"),
    (AuthConfig(secret_env="CHERRY_SECRET"), "auth.secret_env: environment variable CHERRY_SECRET is not set"),
    (AuthConfig(secret_env="EMPTY"), "auth.secret_env: environment variable EMPTY is empty"),
    (AuthConfig(secret_file="/nonexistent/secret"), r"auth.secret_file: cannot read /nonexistent/secret"),
    (AuthConfig(secret="short"), "auth.secret: must be at least 32 characters"),
    (AuthConfig(secret_env="SHORT"), "auth.secret_env: must be at least 32 characters"),
    (AuthConfig(secret=NEW, previous_secrets=(OLD, "env:GONE")),
     r"auth.previous_secrets\[1\]: environment variable GONE is not set"),
    (AuthConfig(secret=NEW, previous_secrets=("tiny",)), r"auth.previous_secrets\[0\]: must be at least 32"),
    (AuthConfig(), "auth.secret: a secret is required outside --dev"),
])
def test_unusable_secret_settings_name_the_key(auth, message):
    with pytest.raises(SecretError, match=message):
        resolve_secrets(auth, dev=False, environ={"EMPTY": " ", "SHORT": "s" * 31})


def test_empty_secret_file_is_an_error(tmp_path):
    (tmp_path / "blank").write_text(" \n")
    with pytest.raises(SecretError, match="auth.secret_file: .*blank is empty"):
        resolve_secrets(AuthConfig(secret_file=str(tmp_path / "blank")), dev=False)


def test_dev_mode_without_a_secret_gets_a_random_one_per_run_and_may_use_short_ones():
    first, second = resolve_secrets(AuthConfig(), dev=True), resolve_secrets(AuthConfig(), dev=True)
    assert first.generated and second.generated
    assert first.current != second.current and len(first.current) >= 32
    assert resolve_secrets(AuthConfig(secret="short"), dev=True) == Secrets("short")
    with pytest.raises(SecretError, match="CHERRY_SECRET is not set"):  # configured but missing: still an error
        resolve_secrets(AuthConfig(secret_env="CHERRY_SECRET"), dev=True, environ={})
