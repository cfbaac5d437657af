"""deploy/prometheus/: every rules file passes `promtool check rules`, the promtool unit tests
pass, and every alert is explained in docs/observability.md (what it means, what to do)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.prometheus import binary

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "deploy" / "prometheus"
DOC = ROOT / "docs" / "observability.md"


def rule_files() -> list[Path]:
    # Every rules file of the directory: the control plane's, and the data plane's beside it.
    files = sorted(RULES_DIR.glob("*rules.yaml"))
    assert RULES_DIR / "controlplane-rules.yaml" in files
    return files


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("promtool"), *args], capture_output=True, text=True, timeout=120)


def test_promtool_checks_every_rules_file() -> None:
    result = promtool("check", "rules", *map(str, rule_files()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_example_configuration_is_valid_and_loads_every_rules_file() -> None:
    result = promtool("check", "config", str(RULES_DIR / "prometheus.example.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rule_files())} rule files found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    tests = sorted((RULES_DIR / "tests").glob("*.test.yaml"))
    assert tests, "no promtool unit tests in deploy/prometheus/tests/"
    result = promtool("test", "rules", *map(str, tests))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The unit tests assert something: a NACK that never happens fails the NACK test."""
    source = RULES_DIR / "tests" / "controlplane-rules.test.yaml"
    text = source.read_text().replace("values: '0 0 0 1 1 1 1 1 1 1 1 1 1'", "values: '0x12'")
    text = text.replace("../controlplane-rules.yaml", str(RULES_DIR / "controlplane-rules.yaml"))
    broken = tmp_path / "broken.test.yaml"
    broken.write_text(text)
    result = promtool("test", "rules", str(broken))
    assert result.returncode != 0
    assert "McpgwXdsNack" in result.stdout + result.stderr


def test_every_alert_is_documented_with_its_runbook_anchor() -> None:
    doc = DOC.read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in doc.splitlines()
        if line.startswith("#")
    }
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                runbook = rule["annotations"]["runbook"]
                assert runbook == f"docs/observability.md#{rule['alert'].lower()}", runbook
                assert rule["alert"].lower() in anchors, f"{rule['alert']} has no section in {DOC}"
