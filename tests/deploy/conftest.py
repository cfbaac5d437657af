"""The deploy tests (`make test-deploy`): images built once per session, with podman."""

from __future__ import annotations

import pytest

from tests.deploy.podman import build_images


@pytest.fixture(scope="session")
def images() -> float:
    """Both images built from this checkout; the build's seconds (printed by the tests that use it)."""
    return build_images()
