"""Reading importer inputs (JSON or YAML) and writing registry YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mcpgw import nesting
from mcpgw.registry import yamldocs


class UnreadableInput(Exception):
    """The input file is missing or is neither JSON nor YAML."""


def load_input(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UnreadableInput(f"{path}: {error}") from error
    try:
        # JSON first: it is what OpenAPI 3.1 and Nacos exports usually are, and it is exact.
        return nesting.loads(text)
    except nesting.TooDeep as error:
        raise UnreadableInput(f"{path}: {error}") from None
    except ValueError:
        pass
    try:
        documents = yamldocs.load_all(text)
    except yaml.YAMLError as error:
        raise UnreadableInput(f"{path}: neither JSON nor YAML: {error}") from error
    if len(documents) != 1:
        raise UnreadableInput(f"{path}: expected one JSON/YAML document, found {len(documents)}")
    return documents[0]


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line text so descriptions stay readable in the registry."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and value == value.rstrip(" ") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_documents(documents: list[dict[str, Any]], header: str = "") -> str:
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    body = "---\n".join(
        yaml.dump(d, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110) for d in documents
    )
    return comment + body
