"""Which token source a client process uses, as command-line options that travel between processes.

``loadtests.run``, the locustfile, the load agent and the standalone viewer and host processes all
take ``--secret-env NAME`` / ``--secret-file PATH`` (with ``--token-issuer``) or ``--token-command
CMD``; none of them: a dev gateway's ``/dev/token``. Secrets never go on a command line, only the
name of the variable or file that holds them (child processes inherit the environment).

Standard library only: the locustfile (gevent) imports this; the sources themselves
(:mod:`loadtests.webrtc.tokens`) are loaded only where an event loop runs.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp

    from loadtests.webrtc.tokens import TokenSource

DEFAULT_ISSUER = "cherry-gateway"
SETUP_HINT = "check --secret-env / --secret-file / --token-command and --token-issuer against the gateway's [auth]"


class TokenError(Exception):
    """No token could be had: the token source failed (a set-up problem of the client, not the gateway)."""


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """Which token source a client process uses; none given: a dev gateway's /dev/token."""

    secret_env: str = ""
    secret_file: str = ""
    issuer: str = DEFAULT_ISSUER
    command: str = ""

    @classmethod
    def from_args(cls, args: Any) -> TokenSettings:
        return cls(getattr(args, "secret_env", "") or "", getattr(args, "secret_file", "") or "",
                   getattr(args, "token_issuer", "") or DEFAULT_ISSUER, getattr(args, "token_command", "") or "")

    @property
    def given(self) -> bool:
        return bool(self.secret_env or self.secret_file or self.command)

    def argv(self) -> list[str]:
        """The same settings as command-line options, for a child process."""
        argv: list[str] = []
        for option, value in (("--secret-env", self.secret_env), ("--secret-file", self.secret_file),
                              ("--token-command", self.command)):
            if value:
                argv += [option, value]
        if self.issuer != DEFAULT_ISSUER:
            argv += ["--token-issuer", self.issuer]
        return argv

    def secret(self) -> str:
        """The secret named by ``secret_env`` / ``secret_file``; :class:`TokenError` if unusable."""
        if self.secret_env:
            value = os.environ.get(self.secret_env, "")
            if not value.strip():
                state = "is empty" if self.secret_env in os.environ else "is not set"
                raise TokenError(f"--secret-env: environment variable {self.secret_env} {state}")
            return value
        try:
            value = Path(self.secret_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenError(f"--secret-file: cannot read {self.secret_file}: {exc}") from exc
        if not value:
            raise TokenError(f"--secret-file: {self.secret_file} is empty")
        return value

    def check(self) -> None:
        """:class:`TokenError` for settings that cannot work (more than one source, no secret)."""
        chosen = [option for option, value in (("--secret-env", self.secret_env), ("--secret-file", self.secret_file),
                                               ("--token-command", self.command)) if value]
        if len(chosen) > 1:
            raise TokenError(f"{' and '.join(chosen)}: give only one token source")
        if self.secret_env or self.secret_file:
            self.secret()
        if self.command and not shlex.split(self.command):
            raise TokenError("--token-command is empty")

    def source(self, base_url: str, http: Callable[[], aiohttp.ClientSession] | None = None) -> TokenSource:
        """The token source these settings name (:class:`TokenError` if they cannot work); ``http``:
        the session a /dev/token source asks with (needed only when no source is given)."""
        from loadtests.webrtc.tokens import CommandTokenSource, DevTokenSource, SecretTokenSource

        self.check()
        if self.command:
            return CommandTokenSource(self.command)
        if self.secret_env or self.secret_file:
            where = f"--secret-env {self.secret_env}" if self.secret_env else f"--secret-file {self.secret_file}"
            return SecretTokenSource(self.secret(), self.issuer, description=f"the secret of {where}")
        if http is None:
            raise TokenError("no token source given, and no HTTP session to ask /dev/token with")
        return DevTokenSource(base_url, http)


def add_token_arguments(parser: Any) -> None:
    """``--secret-env``, ``--secret-file``, ``--token-issuer``, ``--token-command`` on an argparse parser."""
    parser.add_argument("--secret-env", default="", metavar="NAME",
                        help="mint tokens with the secret in this environment variable (the gateway's auth secret)")
    parser.add_argument("--secret-file", default="", metavar="PATH",
                        help="mint tokens with the secret in this file (surrounding whitespace ignored)")
    parser.add_argument("--token-issuer", default=DEFAULT_ISSUER, metavar="ISS",
                        help="the gateway's auth.issuer, for --secret-env / --secret-file (default: cherry-gateway)")
    parser.add_argument("--token-command", default="", metavar="CMD",
                        help="run CMD --room R --role ROLE --identity ID for each token (it prints a JWT), e.g. "
                             "'cherry-gateway token --config gateway.toml'; with none of these: GET /dev/token")
