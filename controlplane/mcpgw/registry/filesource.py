"""The embedded default registry: a directory of YAML documents, watched for changes.

A change is applied all or nothing: if any document is invalid, the whole directory is
rejected and the last valid snapshot keeps being served, so a half-edited file can never
take tools away from clients. The problems are logged with file, field path and reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml

from mcpgw.log import get_logger
from mcpgw.registry.model import McpServer, RegistrySnapshot
from mcpgw.registry.validate import Invalid, Problem, check_includes, parse_server

log = get_logger(__name__)
YAML_SUFFIXES = (".yaml", ".yml")


def registry_files(directory: Path) -> list[Path]:
    """Every YAML document file under `directory`, in a stable order; hidden files are editor litter."""
    return sorted(
        path
        for path in directory.rglob("*")
        if path.suffix in YAML_SUFFIXES
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )


def load_directory(directory: Path) -> RegistrySnapshot:
    """Parse and validate every document; raises `Invalid` with all problems of all files."""
    if not directory.is_dir():
        raise Invalid([Problem(str(directory), "", "registry directory does not exist")])
    problems: list[Problem] = []
    servers: dict[str, McpServer] = {}
    for path in registry_files(directory):
        try:
            documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            problems.append(Problem(str(path), "", f"cannot read YAML: {_short(error)}"))
            continue
        for index, document in enumerate(d for d in documents if d is not None):
            label = f"{path}#{index}" if len(documents) > 1 else str(path)
            try:
                server = parse_server(document, label)
            except Invalid as error:
                problems.extend(error.problems)
                continue
            if server.key in servers:
                problems.append(
                    Problem(
                        label,
                        "name",
                        f"server {server.key!r} is also defined in {servers[server.key].source}",
                    )
                )
                continue
            servers[server.key] = server
    problems += check_includes(list(servers.values()))
    if problems:
        raise Invalid(problems)
    return RegistrySnapshot(servers=tuple(servers[key] for key in sorted(servers)))


def _short(error: Exception) -> str:
    return " ".join(str(error).split())


def _directory_signature(directory: Path) -> tuple[tuple[str, int, int], ...]:
    signature = []
    for path in registry_files(directory) if directory.is_dir() else []:
        try:
            stat = path.stat()
        except OSError:
            continue
        signature.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(signature)


SnapshotHandler = Callable[[RegistrySnapshot], Awaitable[None]]


class FileSource:
    """Loads a registry directory and re-loads it when a file changes.

    Polling stat signatures (not inotify) works the same on every filesystem, including the
    ConfigMap volumes and network mounts operators keep registries on, and a 200 ms period
    keeps edits well under the one-second propagation goal.
    """

    def __init__(self, directory: Path, poll_interval: float = 0.2) -> None:
        self.directory = directory
        self.poll_interval = poll_interval
        self.snapshot: RegistrySnapshot | None = None
        self.problems: list[Problem] = []
        self._signature: tuple[tuple[str, int, int], ...] | None = None

    def load(self) -> bool:
        """Re-read the directory; returns True when a new valid snapshot replaced the old one."""
        self._signature = _directory_signature(self.directory)
        try:
            snapshot = load_directory(self.directory)
        except Invalid as error:
            self.problems = error.problems
            for problem in error.problems:
                log.error(
                    "registry_invalid",
                    file=problem.file,
                    field=problem.path or "<document>",
                    reason=problem.reason,
                    kept_revision=self.snapshot.revision if self.snapshot else None,
                )
            return False
        self.problems = []
        if self.snapshot is not None and snapshot.revision == self.snapshot.revision:
            return False
        self.snapshot = snapshot
        log.info(
            "registry_loaded",
            directory=str(self.directory),
            servers=len(snapshot.servers),
            tools=sum(len(s.tools) for s in snapshot.servers),
            revision=snapshot.revision,
        )
        return True

    async def watch(self, on_snapshot: SnapshotHandler) -> None:
        """Poll until cancelled, calling `on_snapshot` for each new valid snapshot."""
        while True:
            await asyncio.sleep(self.poll_interval)
            if _directory_signature(self.directory) == self._signature:
                continue
            # Editors write in several steps; a short settle avoids parsing a half-written file.
            await asyncio.sleep(0.02)
            if self.load() and self.snapshot is not None:
                await on_snapshot(self.snapshot)
