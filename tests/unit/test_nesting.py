"""The nesting limit every parsed JSON/YAML document goes through (`mcpgw.nesting`)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from mcpgw import nesting
from mcpgw.importers.io import UnreadableInput, load_input
from mcpgw.registry.filesource import load_directory
from mcpgw.registry.reader import Invalid


def test_depth_counts_containers_and_scalars_are_zero() -> None:
    assert nesting.depth(1) == 0 and nesting.depth("x") == 0
    assert nesting.depth([]) == 1 and nesting.depth({"a": [1, {"b": []}]}) == 4


@pytest.mark.parametrize("levels", [65, 1_000, 100_000])
def test_deep_json_is_too_deep_not_a_recursion_error(levels: int) -> None:
    with pytest.raises(nesting.TooDeep, match="64 levels"):
        nesting.loads("[" * levels + "]" * levels)
    assert nesting.loads("[" * 64 + "]" * 64) is not None


def test_shared_yaml_nodes_are_measured_once_and_a_cycle_is_refused() -> None:
    # An alias bomb's breadth: 9 levels of 10 references each, 10^9 paths, a few nodes.
    text = "a0: &a0 [1]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10)
    )
    started = time.monotonic()
    assert nesting.depth(yaml.safe_load(text)) == 11
    assert time.monotonic() - started < 1.0
    with pytest.raises(nesting.TooDeep, match="refers to itself"):
        nesting.check_depth(yaml.safe_load("a: &a [*a]"))


def test_importers_and_the_registry_reader_refuse_deep_documents(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text('{"openapi": "3.1.0", "paths": ' + "[" * 5_000 + "]" * 5_000 + "}")
    with pytest.raises(UnreadableInput, match="levels"):
        load_input(deep)
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "deep.yaml").write_text("name: deep\ntools: " + "[" * 500 + "]" * 500 + "\n")
    with pytest.raises(Invalid) as error:
        load_directory(registry)
    assert "64 levels" in str(error.value.problems[0])
