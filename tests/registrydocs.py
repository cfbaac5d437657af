"""Hypothesis strategies for `kind: McpServer` documents that probe the header rules.

The documents follow the registry schema (docs/registry.md, `registry/validate.py`), with the values an
attacker or a careless operator would write where a header name or value comes from the
registry: argument names with `position: header`, header templates, `apiKey` schemes, inline
credentials. Names and values are drawn from ordinary ones, gateway-owned ones (hop-by-hop,
`Host`, pseudo-headers, `x-envoy-*`) and arbitrary strings with control characters and
non-ASCII text, so most documents are refused and some are not; the property tests check that
every accepted one is accepted downstream too (the filter's parser, a real Envoy).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

OWNED_NAMES = (
    "Host",
    ":authority",
    ":path",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Keep-Alive",
    "TE",
    "Trailer",
    "Upgrade",
    "Expect",
    "Proxy-Authorization",
    "X-Envoy-Original-Path",
    "cookie",
)
PLAIN_NAMES = ("X-Api-Key", "x-tenant", "Authorization", "X_Odd", "x.dotted", "a", "x-envoy", "proxy")
# Control characters, DEL, non-ASCII (2- and 4-byte UTF-8), a quote and a backslash.
_CONTROLS = ["\t", "\r", "\n", "\x00", "\x0b", "\x1b", "\x7f"]
_ALPHABET = st.sampled_from(["a", "Z", "0", " ", *_CONTROLS, "é", "€", "😀", '"', "\\", ":", ";"])
weird_text = st.text(_ALPHABET, min_size=1, max_size=12)
_TOKEN_CHARS = st.sampled_from(list("abcXYZ019!#$%&'*+-.^_`|~"))

header_names = st.one_of(
    st.sampled_from(OWNED_NAMES),
    st.sampled_from(PLAIN_NAMES),
    st.text(_TOKEN_CHARS, min_size=1, max_size=10),
    weird_text,
)
# Argument names must also match the registry's argument-name pattern; these exercise both.
arg_names = st.one_of(
    st.sampled_from([n for n in (*OWNED_NAMES, *PLAIN_NAMES) if not n.startswith(":")]),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_\-]{0,8}", fullmatch=True),
)
header_values = st.one_of(st.sampled_from(["v", "Bearer x", "a\tb", "é"]), weird_text)
credentials = st.one_of(st.sampled_from(["secret-1", "tok\twith tab", "naïve"]), weird_text)


@st.composite
def server_documents(draw: st.DrawFn, backend: str = "127.0.0.1:8080", name: str = "prop") -> dict[str, Any]:
    """One server document with a tool whose request carries registry-chosen headers."""
    args: list[dict[str, Any]] = [{"name": "id", "type": "string", "required": True, "position": "path"}]
    for arg_name in draw(st.lists(arg_names, max_size=2, unique_by=str.lower)):
        if arg_name.lower() == "id":
            continue
        args.append({"name": arg_name, "type": "string", "position": "header"})
    headers = [
        {"key": key, "value": value}
        for key, value in draw(
            st.lists(st.tuples(header_names, header_values), max_size=2, unique_by=lambda kv: kv[0].lower())
        )
    ]
    request: dict[str, Any] = {"url": "/items/{{.args.id}}", "method": "GET"}
    if headers:
        request["headers"] = headers
    document: dict[str, Any] = {
        "kind": "McpServer",
        "name": name,
        "description": draw(st.one_of(st.just("d"), weird_text)),
        "backend": {"endpoints": [backend]},
        "tools": [
            {"name": "probe", "description": draw(weird_text), "args": args, "requestTemplate": request}
        ],
    }
    scheme = draw(
        st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {
                    "id": st.just("key"),
                    "type": st.just("apiKey"),
                    "in": st.sampled_from(["header", "query"]),
                    "name": header_names,
                    "defaultCredential": credentials,
                }
            ),
            st.fixed_dictionaries(
                {
                    "id": st.just("key"),
                    "type": st.just("http"),
                    "scheme": st.sampled_from(["bearer", "basic"]),
                    "defaultCredential": credentials,
                }
            ),
        )
    )
    if scheme is not None:
        document["securitySchemes"] = [scheme]
        request["security"] = {"id": "key"}
    return document


def header_arguments(document: dict[str, Any], value: str) -> dict[str, str]:
    """Arguments for the probe tool: the path id, and `value` in every header argument."""
    arguments = {"id": "42"}
    for arg in document["tools"][0]["args"]:
        if arg.get("position") == "header":
            arguments[arg["name"]] = value
    return arguments
