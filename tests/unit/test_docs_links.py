"""Every relative Markdown link in the project's documentation leads somewhere.

The README is a door and the reference lives in `docs/`, so most links cross files and many name a
heading (`security.md#xds-control-plane--envoy`). A page split or a renamed heading breaks them
silently on GitHub; this test reads each page the way GitHub renders it (headings outside code
blocks, GitHub's anchor slugs) and checks that each relative link's file exists and, when it has
a `#fragment` into a Markdown file, that the file has that heading.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[2]
# The pages people read: the README, the reference, and the READMEs beside the code they describe.
PAGES = sorted(
    [
        REPO / "README.md",
        *(REPO / "docs").glob("*.md"),
        REPO / "deploy" / "README.md",
        REPO / "bench" / "README.md",
        REPO / "wasm-filters" / "README.md",
        REPO / "wasm-filters" / "mcp-server" / "CONFIG.md",
        REPO / "CHANGELOG.md",
    ]
)
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target) or [text](target "title"); the text may hold `code` and nested [brackets].
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+).+?\1")


def prose(text: str) -> list[str]:
    """The page's lines outside fenced code blocks (where `#` and `](` are not Markdown)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text lower-cased, every character other than
    a letter, digit, `_`, `-` or space dropped, each space a `-` (so `a ↔ b` is `a--b`)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    """Every heading's anchor, repeated headings numbered `-1`, `-2`, … as GitHub does."""
    seen: dict[str, int] = {}
    result = set()
    for line in prose(page.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return frozenset(result)


def links(page: Path) -> list[str]:
    """The relative link targets of a page (no scheme, no `mailto:`), outside code."""
    targets = []
    for line in prose(page.read_text()):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
                continue  # http:, https:, mailto:
            targets.append(target)
    return targets


def shown(file: Path) -> str:
    return str(file.relative_to(REPO)) if file.is_relative_to(REPO) else file.name


def broken(page: Path, target: str) -> str | None:
    """Why a link of `page` leads nowhere, or None."""
    path, _, fragment = target.partition("#")
    file = (page.parent / unquote(path)).resolve() if path else page
    if not file.exists():
        return f"{shown(file)} does not exist"
    if fragment and file.suffix == ".md" and unquote(fragment).lower() not in anchors(file):
        return f"{shown(file)} has no heading with the anchor #{fragment}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    problems = [f"({target}): {reason}" for target in links(page) if (reason := broken(page, target))]
    assert not problems, f"{page.relative_to(REPO)}:\n" + "\n".join(problems)


def test_the_checker_knows_githubs_slugs_and_finds_broken_links(tmp_path: Path) -> None:
    assert slug("MCP behaviour (Streamable HTTP, `POST /mcp/{ns}/{server}`)") == (
        "mcp-behaviour-streamable-http-post-mcpnsserver"
    )
    assert slug("xDS: control plane ↔ Envoy") == "xds-control-plane--envoy"
    assert slug("HTTP+SSE (2024-11-05)") == "httpsse-2024-11-05"
    assert slug("`backend.tls`") == "backendtls"
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## Same\n\n## Same\n\n```\n# not a heading\n[x](gone.md)\n```\n\n"
        "[a](#same-1) [b](#not-a-heading) [c](gone.md) [d](page.md#title) `[e](gone.md)`\n"
    )
    found = {target: broken(page, target) for target in links(page)}
    assert found == {
        "#same-1": None,
        "#not-a-heading": "page.md has no heading with the anchor #not-a-heading",
        "gone.md": "gone.md does not exist",
        "page.md#title": None,
    }
