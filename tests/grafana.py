"""The shipped Grafana dashboard (deploy/grafana/mcpgw.json): its panels' queries, as Grafana runs them.

`expressions(values)` gives every panel target's PromQL with the template variables replaced the
way Grafana replaces them for Prometheus (a multi-value variable becomes a regex alternation of
its values, regex-escaped) and Grafana's interval variables replaced by fixed ranges.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "mcpgw.json"
# Grafana's built-in range variables, fixed: Prometheus scrapes every second in the tests, so a
# minute holds enough samples for rate().
BUILTINS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
# A variable set to *All*: Grafana writes its `allValue` (".*" in the shipped dashboard).
ALL = ("$__all",)
_REGEX_SPECIAL = re.compile(r"([\\^$.|?*+()\[\]{}])")


@dataclass(frozen=True)
class Target:
    panel: str
    ref_id: str
    expr: str


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that queries (rows only group), also those inside collapsed rows."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def targets(dashboard: Mapping[str, Any]) -> list[Target]:
    return [Target(p["title"], t["refId"], t["expr"]) for p in panels(dashboard) for t in p["targets"]]


def query_variables(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """name -> the variable's query (`label_values(...)`), for the query variables."""
    return {v["name"]: v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"}


def regex_value(values: Sequence[str]) -> str:
    """A multi-value selection as Grafana writes it into a Prometheus `=~` matcher."""
    if tuple(values) == ALL:
        return ".*"
    escaped = [_REGEX_SPECIAL.sub(r"\\\\\1", value) for value in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(expr: str, values: Mapping[str, Sequence[str]]) -> str:
    """`expr` with `$name` / `${name}` replaced by `values[name]` and the built-in intervals fixed."""
    for builtin, fixed in BUILTINS.items():
        expr = expr.replace(builtin, fixed)
    for name, chosen in values.items():
        expr = expr.replace("${" + name + "}", regex_value(chosen)).replace("$" + name, regex_value(chosen))
    assert "$" not in expr, f"an unreplaced variable in {expr!r}"
    return expr
