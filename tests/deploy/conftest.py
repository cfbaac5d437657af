"""The deploy tests (`make test-deploy`): images built once per session, with podman."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deploy.podman import build_images


@pytest.fixture(scope="session")
def images() -> float:
    """Both images built from this checkout; the build's seconds (printed by the tests that use it)."""
    return build_images()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Lets fixtures see whether their test failed (the kube play tests print the pods' logs)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"report_{report.when}", report)
