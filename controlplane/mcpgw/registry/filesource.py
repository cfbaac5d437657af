"""The embedded default registry: a directory of YAML documents, watched for changes.

A change is applied all or nothing: if any document is invalid, the whole directory is
rejected and the last valid snapshot keeps being served, so a half-edited file can never
take tools away from clients. The problems are logged with file, field path and reason.

Writes through the admin API are persisted here atomically (write a temporary file, then
rename over the old one), so a crash never leaves a half-written document behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import tempfile
from pathlib import Path

import yaml

from mcpgw.log import get_logger
from mcpgw.registry import yamldocs
from mcpgw.registry.authmodel import Consumer
from mcpgw.registry.model import McpServer, RegistrySnapshot
from mcpgw.registry.reader import Invalid, Problem
from mcpgw.registry.store import (
    Entry,
    RegistryStore,
    StoreUnavailable,
    parse_document,
    registry_problems,
    snapshot_of,
)

log = get_logger(__name__)
YAML_SUFFIXES = (".yaml", ".yml")
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
# mtime, size and inode: an atomic rename changes the inode even within one timestamp tick.
Signature = tuple[int, int, int]


# A Kubernetes ConfigMap volume: each key is a link `KEY -> ..data/KEY`, and the kubelet updates
# the volume by renaming a new `..data` link over the old one (it points at a hidden timestamped
# directory). Hidden entries are skipped below, so the keys are read once, through their links;
# the swap changes every key's inode, which the poll sees like any other edit.
KUBERNETES_DATA = "..data"


def registry_files(directory: Path) -> list[Path]:
    """Every YAML document file under `directory`, in a stable order; hidden files are editor litter
    (and, in a ConfigMap volume, the kubelet's `..data` link and its timestamped versions)."""
    return sorted(
        path
        for path in directory.rglob("*")
        if path.suffix in YAML_SUFFIXES
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )


def _short(error: Exception) -> str:
    return " ".join(str(error).split())


def _parse_file(path: Path) -> tuple[list[Entry], list[Problem]]:
    try:
        documents = yamldocs.load_all(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        return [], [Problem(str(path), "", f"cannot read YAML: {_short(error)}")]
    entries: list[Entry] = []
    problems: list[Problem] = []
    for index, document in enumerate(documents):
        label = f"{path}#{index}" if len(documents) > 1 else str(path)
        try:
            entries.append(Entry(parse_document(document, label), document))
        except Invalid as error:
            problems.extend(error.problems)
    return entries, problems


def _assemble(
    parsed: dict[Path, tuple[list[Entry], list[Problem]]],
) -> tuple[dict[str, Entry], list[Problem]]:
    entries: dict[str, Entry] = {}
    problems: list[Problem] = []
    for path in sorted(parsed):
        file_entries, file_problems = parsed[path]
        problems += file_problems
        for entry in file_entries:
            key = entry.server.key
            if key in entries:
                other = entries[key].server.source
                what = "consumer" if isinstance(entry.server, Consumer) else "server"
                problems.append(
                    Problem(entry.server.source, "name", f"{what} {key!r} is also defined in {other}")
                )
                continue
            entries[key] = entry
    problems += registry_problems(entries)
    return entries, problems


def load_directory(directory: Path) -> RegistrySnapshot:
    """Parse and validate every document; raises `Invalid` with all problems of all files."""
    if not directory.is_dir():
        raise Invalid([Problem(str(directory), "", _not_a_directory(directory))])
    return _snapshot(registry_files(directory))


def load_file(path: Path) -> RegistrySnapshot:
    """The documents of one YAML file, validated as a registry of that file alone (`mcpgw
    validate -f FILE`: what `mcpgw apply -f FILE` would send); an `include` must name a server
    in the same file."""
    if not path.is_file():
        reason = "is a directory" if path.is_dir() else "file does not exist"
        raise Invalid([Problem(str(path), "", reason)])
    return _snapshot([path])


def _not_a_directory(path: Path) -> str:
    if path.exists():
        return "not a directory (a registry is a directory of YAML files)"
    return "registry directory does not exist"


def _snapshot(files: list[Path]) -> RegistrySnapshot:
    entries, problems = _assemble({path: _parse_file(path) for path in files})
    if problems:
        raise Invalid(problems)
    return snapshot_of(entries)


def _signature(path: Path) -> Signature | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


class FileStore(RegistryStore):
    """A registry directory, re-read when a file changes; only changed files are parsed again.

    Polling stat signatures (not inotify) works the same on every filesystem, including the
    ConfigMap volumes and network mounts operators keep registries on, and a 200 ms period
    keeps edits well under the one-second propagation goal.
    """

    def __init__(self, directory: Path, poll_interval: float = 0.2) -> None:
        super().__init__()
        self.directory = directory
        self.poll_interval = poll_interval
        self._parsed: dict[Path, tuple[Signature, list[Entry], list[Problem]]] = {}
        self._relabelled: list[Entry] = []

    @property
    def description(self) -> str:
        return str(self.directory)

    def _signatures(self) -> dict[Path, Signature]:
        if not self.directory.is_dir():
            return {}
        found = {path: _signature(path) for path in registry_files(self.directory)}
        return {path: sig for path, sig in found.items() if sig is not None}

    def _changed(self) -> bool:
        return {p: s for p, (s, _, _) in self._parsed.items()} != self._signatures()

    def _refresh(self) -> None:
        signatures = self._signatures()
        for path in list(self._parsed):
            if path not in signatures:
                del self._parsed[path]
        for path, signature in signatures.items():
            cached = self._parsed.get(path)
            if cached is None or cached[0] != signature:
                self._parsed[path] = (signature, *_parse_file(path))

    async def load(self) -> bool:
        if not self.directory.is_dir():
            self.problems = [Problem(str(self.directory), "", _not_a_directory(self.directory))]
            return False
        self._refresh()
        entries, problems = _assemble({path: (e, p) for path, (_, e, p) in self._parsed.items()})
        if problems:
            if problems != self.problems:  # counted once per broken state, not per re-read
                self.events.invalid("registry")
            self.problems = problems
            kept = self.snapshot.revision if self.snapshot else None
            for problem in problems:
                log.error(
                    "registry_invalid",
                    file=problem.file,
                    field=problem.path or "<document>",
                    reason=problem.reason,
                    kept_revision=kept,
                )
            return False
        self.problems = []
        snapshot = snapshot_of(entries)
        if self.snapshot is not None and snapshot.revision == self.snapshot.revision:
            self._entries = entries
            return False
        self._publish(entries, snapshot)
        log.info(
            "registry_loaded",
            directory=str(self.directory),
            servers=len(snapshot.servers),
            consumers=len(snapshot.consumers),
            tools=sum(len(s.tools) for s in snapshot.servers),
            revision=snapshot.revision,
        )
        return True

    async def _watch_changes(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            if not self._changed():
                continue
            # Editors write in several steps; a short settle avoids parsing a half-written file.
            await asyncio.sleep(0.02)
            async with self._write_lock:
                changed = await self.load()
            if changed:
                await self._emit()

    # -- persistence of API writes ----------------------------------------------------------

    def _check_writable(self) -> None:
        """Refuse API writes into a ConfigMap volume: it is read-only, and the ConfigMap is the
        source of truth the kubelet would restore at its next update anyway."""
        if (self.directory / KUBERNETES_DATA).is_symlink():
            raise StoreUnavailable(
                f"registry directory {self.directory} is a Kubernetes ConfigMap volume: edit the "
                "ConfigMap (kubectl edit configmap), or serve a redis:// registry for admin API writes"
            )

    def _new_path(self, key: str) -> Path:
        if key.startswith("consumers/"):
            # `consumers/<namespace>/<name>.yaml`; global consumers under `consumers/_global/`
            # (`_` cannot begin a namespace).
            _, scope, name = key.split("/")
            return self.directory / "consumers" / ("_global" if scope == "*" else scope) / f"{name}.yaml"
        namespace, name = key.split("/")
        return self.directory / namespace / f"{name}.yaml"

    def _source_for(self, key: str, current: Entry | None) -> str:
        return current.server.source if current else str(self._new_path(key))

    async def _persist_put(self, entry: Entry, previous: Entry | None) -> None:
        self._check_writable()
        if previous is None:
            path = self._new_path(entry.server.key)
            if path.exists():
                raise Invalid(
                    [
                        Problem(
                            str(path),
                            "",
                            "file exists but does not define this server; refusing to overwrite",
                        )
                    ]
                )
            self._write(path, [entry])
            return
        path, index = _location(previous.server)
        entries = self._entries_of(path)
        entries[index] = entry
        self._write(path, entries)

    async def _persist_delete(self, key: str, previous: Entry) -> None:
        self._check_writable()
        path, index = _location(previous.server)
        entries = self._entries_of(path)
        del entries[index]
        if entries:
            self._write(path, entries)
        else:
            path.unlink()
            self._parsed.pop(path, None)

    def _entries_of(self, path: Path) -> list[Entry]:
        """The parsed documents of `path`, in file order (the cache is current: writes go through it)."""
        cached = self._parsed.get(path)
        if cached is None or cached[2]:
            raise Invalid(
                [Problem(str(path), "", "file changed on disk and is not valid; fix it before writing")]
            )
        return list(cached[1])

    def _write(self, path: Path, entries: list[Entry]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = yaml.dump_all(
            [e.document for e in entries], Dumper=_Dumper, sort_keys=False, allow_unicode=True
        )
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        # Record our own write as already parsed, so the watcher neither re-reads nor re-applies
        # it. Documents after a deleted one move up: their source label follows their index.
        labelled = [
            Entry(
                dataclasses.replace(e.server, source=f"{path}#{i}" if len(entries) > 1 else str(path)),
                e.document,
            )
            if e.server.source != (f"{path}#{i}" if len(entries) > 1 else str(path))
            else e
            for i, e in enumerate(entries)
        ]
        signature = _signature(path)
        if signature is not None:
            self._parsed[path] = (signature, labelled, [])
        self._relabelled = [e for e, original in zip(labelled, entries, strict=True) if e is not original]

    def _after_persist(
        self, entries: dict[str, Entry], snapshot: RegistrySnapshot
    ) -> tuple[dict[str, Entry], RegistrySnapshot]:
        moved, self._relabelled = self._relabelled, []
        if not moved:
            return entries, snapshot
        entries = {**entries, **{e.server.key: e for e in moved}}
        return entries, snapshot_of(entries)


def _location(server: McpServer | Consumer) -> tuple[Path, int]:
    """The file and document index a server was read from (`path` or `path#index`)."""
    source, _, index = server.source.partition("#")
    return Path(source), int(index) if index else 0
