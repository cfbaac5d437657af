"""Conventions every `mcpgw` subcommand shares: global options, deprecated spellings, environment.

- **Global options go before or after the subcommand** (`mcpgw --log-level debug up` and
  `mcpgw up --log-level debug`): each subcommand, nested ones included, gets a copy whose default
  is `argparse.SUPPRESS`, so the copy only sets the value when it is given there.
- **A renamed flag keeps its old spelling for one release** (`Deprecated`): it still works, and
  says on stderr, in one line, what replaces it, so an operator's script keeps running and its
  log shows what to change.
- **Environment variables are checked before anything starts** (`environment_problems`): a bad
  value is one line naming the variable, what is wrong and what is allowed (exit 2), never a
  traceback from deep inside a component. Values are never echoed when they may be secrets.

docs/cli.md has the table of every flag of every subcommand.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_LEVEL_ENV = "MCPGW_LOG_LEVEL"


class Deprecated(argparse.Action):
    """An old spelling of a flag: stores like the new one and prints a one-line deprecation warning."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, use: str, **kwargs: Any) -> None:
        self.use = use
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(
            f"warning: {option_string} is deprecated and will be removed in the next release; use {self.use}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


class _LazyVersion(argparse.Action):
    """`--version` whose text is made only when asked for (it reads the plugin folder)."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, text: Callable[[], str], **kwargs: Any):
        self.text = text
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(self.text())
        parser.exit()


def add_global_options(
    parser: argparse.ArgumentParser, version: str | Callable[[], str], *, copy: bool = False
) -> None:
    """`--log-level` and `--version`; `copy` for a subcommand's (set only when given there)."""
    if callable(version):
        parser.add_argument(
            "--version",
            action=_LazyVersion,
            dest=argparse.SUPPRESS,
            text=version,
            help="print versions and exit",
        )
    else:
        parser.add_argument("--version", action="version", version=version)
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        default=argparse.SUPPRESS if copy else None,
        help=f"{', '.join(LOG_LEVELS)} (default: ${LOG_LEVEL_ENV} or info); before or after the subcommand",
    )


def accept_global_options_everywhere(
    parser: argparse.ArgumentParser, version: str | Callable[[], str]
) -> None:
    """Give every subcommand (recursively) a copy of the global options."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in {id(p): p for p in action.choices.values()}.values():
                add_global_options(sub, version, copy=True)
                accept_global_options_everywhere(sub, version)


class EnvironmentProblem(ValueError):
    """One bad environment variable: the message names it, the problem and what is allowed."""


def log_level(environ: Mapping[str, str] | None = None) -> str:
    """$MCPGW_LOG_LEVEL (any case), else info; raises EnvironmentProblem for anything else."""
    environ = os.environ if environ is None else environ
    value = environ.get(LOG_LEVEL_ENV, "").strip().lower()
    if not value:
        return "info"
    if value not in LOG_LEVELS:
        raise EnvironmentProblem(
            f"${LOG_LEVEL_ENV}={_shown(value)} is not a log level; expected one of {', '.join(LOG_LEVELS)}"
        )
    return value


def _shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "…")


def _visible_ascii(value: str) -> bool:
    return all(0x21 <= ord(c) <= 0x7E for c in value)


def _admin_token(value: str) -> str | None:
    if not value.strip():
        return "is set but empty; expected a bearer token (e.g. `openssl rand -hex 32`), or unset it"
    if not _visible_ascii(value.strip()):
        return (
            "has characters other than visible ASCII, which an Authorization header cannot carry; "
            "expected a bearer token such as `openssl rand -hex 32` prints"
        )
    return None


def _admin_url(value: str) -> str | None:
    if not value.strip():
        return None
    text = value.strip()
    parsed = urllib.parse.urlsplit(text if "://" in text else f"http://{text}")
    try:
        port_ok = parsed.port is None or 0 < parsed.port < 65536
    except ValueError:
        port_ok = False
    if parsed.scheme not in ("http", "https") or not parsed.hostname or not port_ok:
        expected = "http://HOST:PORT, https://HOST:PORT or HOST:PORT"
        return f"={_shown(value)} is not an admin API URL; expected {expected}"
    return None


def _redis_password(value: str) -> str | None:
    if not value:
        return "is set but empty; expected the Redis password, or unset it for a Redis without one"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8; expected the Redis password as text"
    return None


def _positive_number(value: str) -> str | None:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if value.strip() and not (math.isfinite(number) and number > 0):
        return f"={_shown(value)} is not a positive number of seconds; expected e.g. 600 or 0.5"
    return None


def _positive_integer(value: str) -> str | None:
    if value.strip() and not (value.strip().isdigit() and int(value) > 0):
        return f"={_shown(value)} is not a positive whole number; expected e.g. 10000"
    return None


def _session_key(value: str) -> str | None:
    from mcpgw.sessions.keys import SECRET_BYTES, KeysInvalid, decode_secret

    if not value.strip():
        return "is set but empty; expected a key, or unset it to use the keys file"
    try:
        decode_secret(value)
    except KeysInvalid as error:
        reason = str(error).removeprefix("secret: ")
        reason = f"is {reason}" if reason.startswith("not ") else reason
        return (
            f"{reason}; expected {SECRET_BYTES} random bytes in base64url "
            "(e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return None


def _ca_file(value: str) -> str | None:
    expected = "expected the PEM file of the CA that signed the admin API's certificate"
    if not value.strip():
        return f"is set but empty; {expected}"
    if not os.path.isfile(value.strip()):
        return f"={_shown(value)} is not a file; {expected}"
    return None


_SERVING = frozenset({"up", "serve"})
_ADMIN_CLIENTS = frozenset({"apply", "get", "delete", "session-keys"})
_BROKERS = _SERVING | {"broker"}

# Variable → (the subcommands that read it, its check: None when fine, else what is wrong).
# MCPGW_CREDENTIAL_DIRS / MCPGW_CREDENTIAL_ENV take any text (directories, shell patterns);
# MCPGW_CRED_* are backend credentials, read when a registry names them.
CHECKS: dict[str, tuple[frozenset[str], Callable[[str], str | None]]] = {
    "MCPGW_ADMIN_TOKEN": (_SERVING | _ADMIN_CLIENTS, _admin_token),
    "MCPGW_ADMIN_URL": (_ADMIN_CLIENTS, _admin_url),
    "MCPGW_ADMIN_TLS_CA": (_ADMIN_CLIENTS, _ca_file),
    "MCPGW_REDIS_PASSWORD": (_BROKERS, _redis_password),
    "MCPGW_REDIS_SENTINEL_PASSWORD": (_BROKERS, _redis_password),
    "MCPGW_BRIDGE_IDLE_SECONDS": (_BROKERS, _positive_number),
    "MCPGW_BRIDGE_MAX_SESSIONS": (_BROKERS, _positive_integer),
    "MCPGW_SESSION_KEY": (_SERVING, _session_key),
}


def environment_problems(
    command: str, environ: Mapping[str, str] | None = None, *, unused: Sequence[str] = ()
) -> list[str]:
    """One line per bad variable `command` reads (skipping `unused`: overridden by a flag)."""
    environ = os.environ if environ is None else environ
    problems = []
    for name, (commands, check) in CHECKS.items():
        if command in commands and name in environ and name not in unused:
            problem = check(environ[name])
            if problem is not None:
                problems.append(f"${name}{'' if problem.startswith('=') else ' '}{problem}")
    return problems
