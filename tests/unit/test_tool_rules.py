"""The per-tool alert rules (deploy/prometheus/mcpgw-tools.rules.yaml), checked and run by promtool.

`promtool test rules` evaluates them against series shaped as Envoy exports the filter's
metrics (tests/integration/test_dataplane_metrics.py shows the real names and labels): a
failing tool must alert and a healthy one must not. promtool comes with Debian's `prometheus`
package; without it this test fails, it does not skip.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "mcpgw-tools.rules.yaml"

BAD = 'mcp_namespace="team-a",mcp_server="svc",mcp_tool="pets.fail"'
GOOD = 'mcp_namespace="team-a",mcp_server="svc",mcp_tool="pets.get_v2"'


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: apt-get install prometheus"
    return found


SUMMARIES = {
    "McpToolHighErrorRate": "Tool pets.fail of team-a/svc fails 16.67% of its calls",
    "McpToolSlow": "Tool pets.fail of team-a/svc: p99 4975 ms",
}


def annotations(alert: str) -> dict[str, str]:
    """The alert's annotations as it fires for `pets.fail` (the description is the rule file's)."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    [rule] = [r for g in groups for r in g["rules"] if r.get("alert") == alert]
    return {"summary": SUMMARIES[alert], "description": rule["annotations"]["description"]}


def test_rules_are_valid() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_for_the_failing_and_slow_tool_only(tmp_path: Path) -> None:
    series = [
        # 1 call/s ok for both tools; the bad one also 0.2/s backend_5xx (17 % errors).
        {"series": f'mcpgw_tool_calls{{{BAD},outcome="ok"}}', "values": "0+60x30"},
        {"series": f'mcpgw_tool_calls{{{BAD},outcome="backend_5xx"}}', "values": "0+12x30"},
        {"series": f'mcpgw_tool_calls{{{GOOD},outcome="ok"}}', "values": "0+60x30"},
    ]
    # The bad tool's calls take 2.5-5 s, the good one's under 100 ms.
    for labels, slow in ((BAD, True), (GOOD, False)):
        for le in ("100", "2500", "5000", "+Inf"):
            within = not slow or le in ("5000", "+Inf")
            values = "0+60x30" if within else "0+0x30"
            series.append(
                {"series": f'mcpgw_tool_duration_ms_bucket{{{labels},le="{le}"}}', "values": values}
            )
    bad = {"mcp_namespace": "team-a", "mcp_server": "svc", "mcp_tool": "pets.fail", "severity": "warning"}
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": "round(mcpgw:tool_error_ratio:rate5m, 0.001)",
                        "eval_time": "20m",
                        "exp_samples": [
                            {"labels": "{" + BAD + "}", "value": 0.167},
                            {"labels": "{" + GOOD + "}", "value": 0},
                        ],
                    }
                ],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "McpToolHighErrorRate", "exp_alerts": []},
                    {
                        "eval_time": "20m",
                        "alertname": "McpToolHighErrorRate",
                        "exp_alerts": [
                            {"exp_labels": bad, "exp_annotations": annotations("McpToolHighErrorRate")}
                        ],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "McpToolSlow",
                        "exp_alerts": [{"exp_labels": bad, "exp_annotations": annotations("McpToolSlow")}],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "rules.test.yaml"
    path.write_text(yaml.safe_dump(test))
    result = subprocess.run(
        [promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
