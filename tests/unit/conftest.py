"""Fixtures for the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.unit.adsharness import Harness, serving


@pytest.fixture
async def ads() -> AsyncIterator[Harness]:
    """A real ADS server on a free loopback port, with helpers to drive it like Envoy."""
    async with serving() as harness:
        yield harness
