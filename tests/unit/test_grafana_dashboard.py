"""The shipped Grafana dashboard is importable and every panel queries the Prometheus variable.

The integration test tests/integration/test_grafana_dashboard.py runs every query against a real
Prometheus; this one checks the JSON's shape without one.
"""

from __future__ import annotations

import re

from tests import grafana

DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
METRIC = re.compile(r"\b(mcpgw[a-z_]*:[a-z0-9_:]+|mcpgw_[a-z0-9_]+)")


def test_the_dashboard_is_importable_json_with_its_variables() -> None:
    dashboard = grafana.load()
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for name in ("namespace", "server", "tool", "instance"):
        assert variables[name]["datasource"] == DS
        assert variables[name]["query"].startswith("label_values("), name
    rows = [p["id"] for p in dashboard["panels"] if p["type"] == "row"]
    ids = rows + [p["id"] for p in grafana.panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids are unique"


def test_every_panel_has_the_datasource_and_a_query() -> None:
    dashboard = grafana.load()
    found = list(grafana.panels(dashboard))
    assert len(found) >= 15
    for panel in found:
        assert panel["datasource"] == DS, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"], panel["title"]
            assert target.get("datasource", DS) == DS, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_every_query_names_metrics_that_exist_and_defined_variables() -> None:
    dashboard = grafana.load()
    documented = (grafana.ROOT / "docs" / "observability.md").read_text()
    rules = "".join(p.read_text() for p in (grafana.ROOT / "deploy" / "prometheus").glob("*rules.yaml"))
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    queries = [t.expr for t in grafana.targets(dashboard)] + list(grafana.query_variables(dashboard).values())
    for expr in queries:
        for name in METRIC.findall(expr):
            base = re.sub(r"_(bucket|total)$", "", name).removeprefix("mcpgw_controlplane_")
            assert f"record: {name}" in rules or base in documented, f"{name} in {expr!r}"
        for variable in re.findall(r"\$\{?(\w+)", expr):
            assert variable in defined or f"${variable}" in grafana.BUILTINS, f"${variable} in {expr!r}"
    # Substitution leaves a query Prometheus can parse: no `$` remains.
    values = {"namespace": ["team-a"], "server": ["svc-1"], "tool": ["(unknown)", "a.b"], "instance": [".*"]}
    for target in grafana.targets(dashboard):
        assert "$" not in grafana.substitute(target.expr, values)
    assert grafana.regex_value(["(unknown)", "a.b"]) == r"(\\(unknown\\)|a\\.b)"
    # *All* is the variables' allValue, as Grafana writes it.
    assert {v.get("allValue") for v in dashboard["templating"]["list"] if v["type"] == "query"} == {".*"}
    assert grafana.regex_value(grafana.ALL) == ".*"
