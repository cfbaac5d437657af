"""Fixtures for the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mcpgw.translate.filtercheck import FilterCheck
from tests.filtercheck import built_filter_check
from tests.unit.adsharness import Harness, serving


@pytest.fixture
async def ads() -> AsyncIterator[Harness]:
    """A real ADS server on a free loopback port, with helpers to drive it like Envoy."""
    async with serving() as harness:
        yield harness


@pytest.fixture(scope="session")
def filter_check() -> FilterCheck:
    """The filter's own configuration parser, as the control plane loads it (built when missing)."""
    return built_filter_check()
