"""Sizes given on the command line (`--max-heap`) and the bootstrap's refusal of a tiny heap."""

from __future__ import annotations

import pytest
import yaml

from mcpgw.bootstrap import BootstrapInvalid, BootstrapOptions, render
from mcpgw.limits import (
    MIN_MAX_HEAP_BYTES,
    connection_cap_warning,
    envoy_connection_cap,
    fd_reserve,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1073741824", 1 << 30),
        ("512Mi", 512 << 20),
        ("512MiB", 512 << 20),
        ("2Gi", 2 << 30),
        ("1G", 1_000_000_000),
        ("800M", 800_000_000),
        ("64ki", 64 << 10),
    ],
)
def test_sizes_in_kubernetes_spellings(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "Mi", "1.5Gi", "-1Gi", "1Ti", "1 Gi x", "lots"])
def test_other_sizes_are_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="expected a size such as 512Mi"):
        parse_size(text)


def test_the_rendered_heap_limit_and_its_floor() -> None:
    options = BootstrapOptions(node_id="edge-1", xds=(("127.0.0.1", 18000),), max_heap_bytes=96 << 20)
    assert f"max_heap_size_bytes: {96 << 20}\n" in render(options)
    with pytest.raises(BootstrapInvalid, match="below 32 MiB"):
        render(BootstrapOptions(node_id="e", xds=(("127.0.0.1", 1),), max_heap_bytes=MIN_MAX_HEAP_BYTES - 1))


@pytest.mark.parametrize("node_id", ["n", "no", "off", "yes", "a: b", "12", "envoy-0"])
def test_bootstrap_keeps_node_ids_and_hosts_as_strings(node_id: str) -> None:
    """YAML reads a bare `n`, `no` or `off` as a boolean and `12` as a number: quoted, they stay ids."""
    options = BootstrapOptions(node_id=node_id, node_cluster=node_id, xds=(("::1", 18000),), admin_host="::1")
    document = yaml.safe_load(render(options))
    assert document["node"] == {"id": node_id, "cluster": node_id}
    assert document["admin"]["address"]["socket_address"]["address"] == "::1"


@pytest.mark.parametrize(
    ("hard", "cap"),
    [
        # A container runtime's default: a quarter kept back, not 1,024 (which left one client).
        (1_024, 384),
        (4_096, 1_536),
        (20_000, 9_488),
        (1_048_576, 50_000),
        (100, 37),
        (4, 1),
    ],
)
def test_the_connection_cap_leaves_room_under_small_file_limits(hard: int, cap: int) -> None:
    assert envoy_connection_cap(hard=hard) == cap
    assert 2 * cap + fd_reserve(hard) <= hard or cap == 1


def test_a_small_connection_cap_is_warned_about_with_the_remedy() -> None:
    warning = connection_cap_warning(envoy_connection_cap(hard=300), hard=300)
    assert warning is not None and "(300)" in warning and "ulimit -n" in warning
    assert connection_cap_warning(envoy_connection_cap(hard=1_024), hard=1_024) is None
