"""mcpgw.bundled: the one place that knows where mcpgw's files are, in a checkout or a wheel."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mcpgw import bundled
from mcpgw.bootstrap import TEMPLATE
from mcpgw.stack import DEFAULT_REGISTRY
from pluginserver.server import DEFAULT_ROOT

REPO = Path(__file__).resolve().parents[2]


def test_a_checkout_uses_the_repository_folders() -> None:
    assert bundled.location() == ("checkout", REPO)
    assert bundled.envoy_dir() == REPO / "envoy"
    assert bundled.bootstrap_template() == REPO / "envoy" / "bootstrap.yaml" == TEMPLATE
    assert bundled.demo_registry() == REPO / "examples" / "registry" == DEFAULT_REGISTRY
    assert bundled.plugins_dir() == REPO / "plugin-server" / "plugins" == DEFAULT_ROOT


def test_an_installed_bundle_is_used_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site-packages" / "mcpgw"
    bundle = package / bundled.BUNDLE_DIR
    for name in ("envoy", "demo-registry", "plugins"):
        (bundle / name).mkdir(parents=True)
    monkeypatch.setattr(bundled, "_package_dir", lambda: package)
    assert bundled.location() == ("wheel", bundle)
    assert bundled.bootstrap_template() == bundle / "envoy" / "bootstrap.yaml"
    assert bundled.demo_registry() == bundle / "demo-registry"
    assert bundled.plugins_dir() == bundle / "plugins"


def test_neither_a_bundle_nor_a_checkout_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "lib" / "site-packages" / "mcpgw"
    package.mkdir(parents=True)
    monkeypatch.setattr(bundled, "_package_dir", lambda: package)
    with pytest.raises(bundled.BundleMissing, match="mcpgw's bundled files are missing"):
        bundled.plugins_dir()


def test_the_wheel_build_writes_the_layout_bundled_reads() -> None:
    """setup.py fills exactly the folders `mcpgw.bundled` maps (a drift would break only wheels)."""
    setup = (REPO / "setup.py").read_text()
    assert f'BUNDLE = Path("mcpgw", "{bundled.BUNDLE_DIR}")' in setup
    for name in ("envoy", "demo-registry"):
        assert f'"{name}": HERE / ' in setup
    assert 'plugins = target / "plugins"' in setup


@pytest.mark.parametrize("command", ["serve", "validate"])
def test_serve_and_validate_need_a_registry(command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mcpgw.cli", command], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "the following arguments are required: -f/--registry" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_without_f_serves_a_copy_of_the_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`up` reads and writes (session keys, admin edits) a temporary copy, removed at the end."""
    from mcpgw import cli

    seen: dict[str, object] = {}

    async def fake_up(args: object) -> int:
        registry = Path(args.registry)  # type: ignore[attr-defined]
        seen["registry"] = registry
        seen["files"] = {p.name: p.read_text() for p in registry.iterdir()}
        return 0

    monkeypatch.setattr(cli, "_up", fake_up)
    assert cli.main(["up"]) == 0
    copy = seen["registry"]
    assert isinstance(copy, Path) and copy != DEFAULT_REGISTRY and not copy.is_relative_to(REPO)
    assert seen["files"] == {p.name: p.read_text() for p in DEFAULT_REGISTRY.iterdir()}
    assert not copy.exists()
    given = tmp_path / "mine"
    given.mkdir()
    assert cli.main(["up", "-f", str(given)]) == 0
    assert seen["registry"] == given and given.is_dir()
