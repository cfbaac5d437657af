"""Resolve the credentials a registry snapshot references (inline, environment variable, file).

Resolution is I/O, so it happens here, before the pure translator runs; a credential that
cannot be read rejects the whole snapshot with the file and field that references it, and the
value itself never appears in any message.

Whoever may write the registry (an admin token holder) chooses what is read and which backend
receives it, so reading is a guarded operation, not a convenience:

- Files are read off the event loop (`resolve_off_loop`): in a daemon thread with a deadline
  (`CredentialPolicy.timeout_s`), at most `MAX_READER_THREADS` at once, so a hung filesystem
  costs a rejected registry, never a frozen admin API, xDS server or session broker.
- Only regular files of at most `CredentialPolicy.max_bytes`. The type is checked with
  `stat` before anything is opened (opening a FIFO blocks; opening some devices acts), the
  open itself is non-blocking and does not follow a symlink swapped in meanwhile, and the
  read stops one byte past the cap whatever the file claims to hold.
- An allow-list (`CredentialPolicy.dirs`, `.env`): `mcpgw serve` and `mcpgw up` turn it on
  (`DEFAULT_CREDENTIAL_DIRS`, `DEFAULT_CREDENTIAL_ENV`).
- Never mcpgw's own secrets, whatever the allow-list says: the session-keys file (and its
  lock and temporary files), the admin token file (`CredentialPolicy.owned`), any `MCPGW_*`
  variable but `MCPGW_CRED_*`, nothing under /proc or /sys (the process's environment is
  there).
- Clients learn only `UNAVAILABLE` (missing, refused and unreadable look the same, so the
  answer tells nothing about the control plane's files); the reason goes to the log
  (`credential_unavailable`), naming the reference but never a value.
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from mcpgw.log import get_logger
from mcpgw.registry.model import RegistrySnapshot, Secret
from mcpgw.registry.reader import Invalid, Problem, secret_problem

log = get_logger(__name__)

# A credential is a token, a key or a password; 64 KiB holds any of them (a PEM bundle too)
# and bounds what one reference can make the control plane hold and send to every Envoy.
MAX_CREDENTIAL_BYTES = 64 << 10
# A local or mounted secret is read in microseconds; one that takes longer is on a hung filesystem.
READ_TIMEOUT_S = 2.0
# Reads still hung past their deadline keep their thread; past this many, reads are refused
# at once instead of piling up one more stuck thread per retry.
MAX_READER_THREADS = 4
DEFAULT_CREDENTIAL_DIRS: tuple[Path, ...] = (Path("/run/secrets"),)
DEFAULT_CREDENTIAL_ENV: tuple[str, ...] = ("MCPGW_CRED_*",)
# What API clients and /status are told, whatever the reason.
UNAVAILABLE = "credential unavailable (the control plane log says why)"

# mcpgw's own variables (the admin token, the pinned session key, the Redis password, its
# settings) live under this prefix; backend credentials under it use `MCPGW_CRED_`.
_OWN_ENV_PREFIX = "MCPGW_"
_CREDENTIAL_ENV_PREFIX = "MCPGW_CRED_"
# Their "regular files" are views of the kernel and of processes (/proc/self/environ).
_NEVER_UNDER = (Path("/proc"), Path("/sys"))
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
_readers = threading.BoundedSemaphore(MAX_READER_THREADS)
# A reference is read once per format: the same file may be a PEM bundle in one place and
# (wrongly) a header credential in another, and each use is checked for what it needs.
_Key = tuple[str, str, str]


def _key(secret: Secret) -> _Key:
    return (secret.kind, secret.ref, secret.format)


@dataclass(frozen=True)
class CredentialPolicy:
    """Which `{file:}` and `{env:}` references may be read, and within which limits.

    `dirs`: a file's real path (symlinks resolved) must lie under one of them; None: anywhere.
    `env`: a variable's name must match one of these shell patterns; None: any name.
    `owned`: mcpgw's own secret files, refused even inside an allowed directory.
    """

    dirs: tuple[Path, ...] | None = None
    env: tuple[str, ...] | None = None
    owned: tuple[Path, ...] = ()
    max_bytes: int = MAX_CREDENTIAL_BYTES
    timeout_s: float = READ_TIMEOUT_S

    @classmethod
    def allow_list(
        cls, dirs: Sequence[Path] | None = None, env: Sequence[str] | None = None
    ) -> CredentialPolicy:
        """The allow-list `mcpgw serve` and `mcpgw up` start with: the defaults where not given."""
        return cls(
            dirs=tuple(DEFAULT_CREDENTIAL_DIRS if dirs is None else dirs),
            env=tuple(DEFAULT_CREDENTIAL_ENV if env is None else env),
        )

    def describe(self) -> dict[str, object]:
        return {
            "dirs": "any" if self.dirs is None else [str(d) for d in self.dirs],
            "env": "any" if self.env is None else list(self.env),
            "max_bytes": self.max_bytes,
            "timeout_s": self.timeout_s,
        }


# No allow-list: any regular file, any variable (mcpgw's own secrets and the limits still hold).
NO_ALLOW_LIST = CredentialPolicy()


class Unavailable(Exception):
    """Why one credential cannot be read: for the log only, never for a client."""


def resolve(snapshot: RegistrySnapshot, policy: CredentialPolicy | None = None) -> dict[Secret, str]:
    """Every credential of `snapshot`, read in the calling thread; raises `Invalid`.

    Blocking: for tools and tests. The control plane uses `resolve_off_loop`.
    """
    policy = policy or NO_ALLOW_LIST
    secrets = snapshot.secrets()
    results: dict[_Key, str | Unavailable] = {}
    _read_each(secrets, policy, results)
    return _outcome(secrets, results)


async def resolve_off_loop(
    snapshot: RegistrySnapshot, policy: CredentialPolicy | None = None
) -> dict[Secret, str]:
    """`resolve` with the files read in a thread, given `policy.timeout_s` in all; raises `Invalid`."""
    policy = policy or NO_ALLOW_LIST
    secrets = snapshot.secrets()
    results: dict[_Key, str | Unavailable] = {}
    # Inline values and variables need no I/O.
    _read_each((s for s in secrets if s.kind != "file"), policy, results)
    files = [s for s in secrets if s.kind == "file"]
    if files:
        results.update(await _read_in_thread(files, policy))
    return _outcome(secrets, results)


async def _read_in_thread(files: list[Secret], policy: CredentialPolicy) -> dict[_Key, str | Unavailable]:
    if not _readers.acquire(blocking=False):
        busy = Unavailable(f"{MAX_READER_THREADS} earlier credential reads are still hung; not read")
        return {_key(s): busy for s in files}
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    abandoned = threading.Event()
    results: dict[_Key, str | Unavailable] = {}

    def work() -> None:
        try:
            _read_each(files, policy, results, abandoned)
        finally:
            _readers.release()
            # The loop may be gone (shutdown) by the time a hung read returns.
            try:
                loop.call_soon_threadsafe(_finish, finished)
            except RuntimeError:
                pass

    # A daemon thread, not an executor: a read hung for good must not hold up the process's exit.
    threading.Thread(target=work, name="mcpgw-credentials", daemon=True).start()
    try:
        await asyncio.wait_for(finished, policy.timeout_s)
    except TimeoutError:
        pass
    finally:
        abandoned.set()
    late = Unavailable(f"not read within {policy.timeout_s:g} s")
    # Copied while the thread may still add to it; what it adds later is not looked at.
    done = dict(results)
    return {_key(s): done.get(_key(s), late) for s in files}


def _finish(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _read_each(
    secrets: Iterable[Secret],
    policy: CredentialPolicy,
    results: dict[_Key, str | Unavailable],
    abandoned: threading.Event | None = None,
) -> None:
    """Read each distinct reference once into `results` (a value or why it is unavailable)."""
    for secret in secrets:
        key = _key(secret)
        if key in results:
            continue
        if abandoned is not None and abandoned.is_set():
            return
        try:
            value = _read(secret, policy)
        except Unavailable as error:
            results[key] = error
            continue
        # Inline values were checked when the document was read; a file's or variable's content
        # only now. Its reason goes to the log like any other: telling the client that a file
        # has a second line would say that it exists.
        problem = secret_problem(secret.format, value)
        results[key] = Unavailable(problem) if problem is not None else value


def _outcome(secrets: list[Secret], results: dict[_Key, str | Unavailable]) -> dict[Secret, str]:
    values: dict[Secret, str] = {}
    problems: list[Problem] = []
    logged: set[_Key] = set()
    for secret in secrets:
        key = _key(secret)
        result = results[key]
        if isinstance(result, str):
            values[secret] = result
            continue
        file, _, field = secret.where.rpartition(": ")
        problems.append(Problem(file, field, UNAVAILABLE))
        if key not in logged:
            logged.add(key)
            # `ref` is a variable name or a path here, never a value (inline values cannot fail).
            log.error(
                "credential_unavailable",
                where=secret.where,
                kind=secret.kind,
                reference=secret.ref,
                reason=str(result),
            )
    if problems:
        raise Invalid(problems)
    return values


def _read(secret: Secret, policy: CredentialPolicy) -> str:
    if secret.kind == "inline":
        return secret.ref
    if secret.kind == "env":
        return _read_env(secret.ref, policy)
    return _read_file(secret.ref, policy)


def _read_env(name: str, policy: CredentialPolicy) -> str:
    if name.startswith(_OWN_ENV_PREFIX) and not name.startswith(_CREDENTIAL_ENV_PREFIX):
        raise Unavailable(f"${name} is mcpgw's own; backend credentials use ${_CREDENTIAL_ENV_PREFIX}*")
    if policy.env is not None and not any(fnmatchcase(name, pattern) for pattern in policy.env):
        raise Unavailable(
            f"${name} matches none of the allowed names ({', '.join(policy.env) or 'none'}; --credential-env)"
        )
    value = os.environ.get(name)
    if not value:
        raise Unavailable(f"${name} is not set or empty")
    if len(value.encode("utf-8", "surrogateescape")) > policy.max_bytes:
        raise Unavailable(f"${name} is longer than {policy.max_bytes} bytes")
    return value


def _read_file(ref: str, policy: CredentialPolicy) -> str:
    try:
        real = Path(os.path.realpath(ref, strict=True))
        described = ref if str(real) == ref else f"{ref} ({real})"
        _check_place(real, described, policy)
        # Checked before opening: opening a FIFO blocks until a writer comes, opening a
        # device may act (a tape rewinds, a watchdog arms).
        before = os.stat(real)
        _check_file(before, real, described, policy)
        fd = os.open(real, _OPEN_FLAGS)
        try:
            # The same file as the one checked: not swapped for a FIFO or device meanwhile.
            opened = os.fstat(fd)
            if (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
                raise Unavailable(f"{described} was replaced while being read")
            data = _read_at_most(fd, policy.max_bytes + 1)
        finally:
            os.close(fd)
    except OSError as error:
        raise Unavailable(f"{ref}: {error.strerror or error.__class__.__name__}") from None
    if len(data) > policy.max_bytes:
        raise Unavailable(f"{described} is larger than {policy.max_bytes} bytes")
    try:
        # Secrets mounted as files usually end with a newline that is not part of the secret.
        value = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise Unavailable(f"{described} is not UTF-8 text") from None
    if not value:
        raise Unavailable(f"{described} is empty")
    return value


def _check_place(real: Path, described: str, policy: CredentialPolicy) -> None:
    for never in _NEVER_UNDER:
        if real.is_relative_to(never):
            raise Unavailable(f"{described} is under {never}, never a credential")
    if policy.dirs is None:
        return
    allowed = [Path(os.path.realpath(d)) for d in policy.dirs]
    if not any(real.is_relative_to(d) for d in allowed):
        shown = ", ".join(str(d) for d in policy.dirs) or "none"
        raise Unavailable(f"{described} is outside the credential directories ({shown}; --credential-dir)")


def _check_file(st: os.stat_result, real: Path, described: str, policy: CredentialPolicy) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise Unavailable(f"{described} is not a regular file ({_file_type(st.st_mode)})")
    for owned in policy.owned:
        if _is_owned(real, st, owned):
            raise Unavailable(f"{described} is mcpgw's own secret ({owned}), never sent to a backend")
    if st.st_size > policy.max_bytes:
        raise Unavailable(f"{described} is larger than {policy.max_bytes} bytes ({st.st_size})")


def _is_owned(real: Path, st: os.stat_result, owned: Path) -> bool:
    """`real` is `owned` (by inode, so a hard link is too) or one of its siblings mcpgw writes
    (`NAME.lock`, `.NAME.*.tmp`)."""
    try:
        mine = os.stat(owned)
        if (mine.st_dev, mine.st_ino) == (st.st_dev, st.st_ino):
            return True
    except OSError:
        pass
    owned_real = Path(os.path.realpath(owned))
    siblings = (owned_real.name, f".{owned_real.name}.")
    return real.parent == owned_real.parent and real.name.startswith(siblings)


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, min(limit - size, 64 << 10))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"
