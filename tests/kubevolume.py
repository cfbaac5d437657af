"""A ConfigMap (or Secret) volume, laid out and updated the way the kubelet does it.

The kubelet's atomic writer (pkg/volume/util/atomic_writer.go) keeps every version of the
volume in a hidden timestamped directory (`..2026_12_03_14_15_24.123456789/`), points the
hidden symlink `..data` at the current one, and shows each key as a symlink `KEY -> ..data/KEY`.
An update writes a new timestamped directory, points `..data_tmp` at it and renames that over
`..data` (the one atomic step), then adds links for new keys, removes links of removed keys and
deletes the old directory. Tests publish registries this way to prove that the control plane
follows a real ConfigMap update, not only a plain file edit.
"""

from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path

DATA = "..data"


def _version_dir(directory: Path) -> Path:
    while True:
        now = datetime.datetime.now(datetime.UTC)
        version = directory / f"..{now:%Y_%m_%d_%H_%M_%S.%f}"
        if not version.exists():
            return version


def publish(directory: Path, files: dict[str, str]) -> None:
    """Make `files` (key → text) the volume's content in one atomic swap of `..data`."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / DATA
    old = Path(os.readlink(data)) if data.is_symlink() else None
    version = _version_dir(directory)
    version.mkdir()
    for key, text in files.items():
        (version / key).write_text(text, encoding="utf-8")
    staged = directory / "..data_tmp"
    staged.symlink_to(version.name)
    os.replace(staged, data)
    for key in files:
        link = directory / key
        if not link.is_symlink():
            link.symlink_to(f"{DATA}/{key}")
    for entry in directory.iterdir():
        if entry.name.startswith(".") or entry.name in files:
            continue
        if entry.is_symlink():
            entry.unlink()
    if old is not None:
        shutil.rmtree(directory / old)


def read(directory: Path) -> dict[str, str]:
    """The volume's current content as an application sees it (key → text)."""
    return {
        entry.name: entry.read_text(encoding="utf-8")
        for entry in sorted(directory.iterdir())
        if not entry.name.startswith(".")
    }
