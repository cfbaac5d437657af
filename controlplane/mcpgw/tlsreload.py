"""TLS for mcpgw's own HTTP servers (the admin API), with certificates reloaded without restart.

`ReloadingServerContext.context` is the `ssl.SSLContext` handed to the server. At every TLS
handshake (at most once per `check_interval`) it compares the files' identity (inode, size,
mtime) with what it loaded; when they changed it builds a fresh context from them and hands
the handshake over to it, so new connections present the new certificate and trust the new
client CA while open ones keep theirs. A pair that does not load (a rotation half done, a key
that does not match) keeps the previous context and is logged once; the next change is tried
again. The same rule as Envoy's: certificate files are replaced, best by a rename.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mcpgw.log import get_logger

log = get_logger(__name__)

# How often a handshake may look at the files: a flood of handshakes costs no more stat calls.
DEFAULT_CHECK_INTERVAL_S = 1.0


class TlsFilesError(RuntimeError):
    """The certificate, key or CA file cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class TlsFiles:
    """A server's PEM files: its certificate chain and key, and the CA its clients must be signed by."""

    cert: Path
    key: Path
    # Set: every client must present a certificate signed by this CA.
    ca: Path | None = None

    def paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key) + ((self.ca,) if self.ca is not None else ())


def _identity(path: Path) -> tuple[int, int, int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0, 0, 0)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A TLS ≥ 1.2 server context from `files`; raises `TlsFilesError` naming the file at fault."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(files.cert, files.key)
    except FileNotFoundError as error:
        raise TlsFilesError(f"cannot read {error.filename}: no such file") from None
    except (OSError, ssl.SSLError) as error:
        raise TlsFilesError(
            f"cannot load certificate {files.cert} with key {files.key}: {_reason(error)}"
        ) from None
    if files.ca is not None:
        try:
            context.load_verify_locations(cafile=files.ca)
        except (OSError, ssl.SSLError) as error:
            raise TlsFilesError(f"cannot load CA {files.ca}: {_reason(error)}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(
    ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A client context that verifies the server against `ca` (default: the system's CAs) and its
    host name, presenting `cert`/`key` when the server asks for a client certificate."""
    try:
        context = ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as error:
        raise TlsFilesError(f"cannot load CA {ca}: {_reason(error)}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as error:
            raise TlsFilesError(f"cannot load client certificate {cert}: {_reason(error)}") from None
    return context


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError):
        return error.reason or str(error)
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return str(error)


class ReloadingServerContext:
    def __init__(self, files: TlsFiles, check_interval: float = DEFAULT_CHECK_INTERVAL_S) -> None:
        self.files = files
        self.check_interval = check_interval
        self._loaded = self._identities()
        # Raises at startup: a server must not start with files it cannot use. This first
        # context is the one given to the server; its callback moves each handshake to the
        # newest one.
        self.context = server_context(files)
        self.context.sni_callback = self._on_client_hello
        self._current = self.context
        self._failed: tuple[tuple[int, int, int, int], ...] | None = None
        self._checked = time.monotonic()
        # Handshakes run on the event loop thread, but a server may also run in a thread.
        self._lock = threading.Lock()
        self.reloads = 0

    def _identities(self) -> tuple[tuple[int, int, int, int], ...]:
        return tuple(_identity(p) for p in self.files.paths())

    def current(self) -> ssl.SSLContext:
        """The context new handshakes use, reloaded first if the files changed."""
        now = time.monotonic()
        with self._lock:
            if now - self._checked < self.check_interval:
                return self._current
            self._checked = now
            seen = self._identities()
            if seen == self._loaded or seen == self._failed:
                return self._current
            try:
                fresh = server_context(self.files)
            except TlsFilesError as error:
                self._failed = seen
                log.warning("tls_reload_failed", error=str(error), serving="the previous certificate")
                return self._current
            self._current, self._loaded, self._failed = fresh, seen, None
            self.reloads += 1
            log.info("tls_reloaded", cert=str(self.files.cert))
            return fresh

    def _on_client_hello(self, connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        connection.context = self.current()
