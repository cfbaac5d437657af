"""Headers a tool sends: which ones arguments may set (registry/tools.py)."""

from __future__ import annotations

import pytest

from mcpgw.registry.validate import Invalid, parse_server
from tests.unit.test_registry import minimal


@pytest.mark.parametrize("name", ["Cookie", "cookie", "Host", "Content-Length", "Transfer-Encoding"])
def test_a_header_argument_cannot_set_what_the_gateway_sets(name: str) -> None:
    # A header template for these names is refused; an argument in header position was not, so
    # `{name: Cookie, position: header}` sent the client's text as the whole Cookie header.
    document = minimal()
    document["tools"][0]["args"].append({"name": name, "position": "header"})
    with pytest.raises(Invalid) as error:
        parse_server(document)
    ((path, reason),) = [(p.path, p.reason) for p in error.value.problems]
    assert path == "tools[0].args[1].name"
    assert reason.startswith(f"{name!r}") and "cannot be a header argument" in reason
    # Elsewhere the name is an ordinary argument name.
    document["tools"][0]["args"][1]["position"] = "query"
    parse_server(document)
