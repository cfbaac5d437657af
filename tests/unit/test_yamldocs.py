"""Reading YAML registry documents with limits (`registry/yamldocs.py`), in every reader."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from mcpgw.registry import yamldocs
from mcpgw.registry.filesource import load_directory
from mcpgw.registry.validate import Invalid
from tests.unit.test_admin import Api
from tests.unit.test_admin import api as api  # the fixture
from tests.unit.test_registry import minimal

# "Billion laughs": 9 ** 9 (387 million) strings in 30 lines of text.
BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)
CYCLE = "kind: McpServer\nname: x\ntools: &t [*t]\n"
DEEP = "kind: McpServer\nname: x\ndescription: " + "[" * 200 + "]" * 200 + "\n"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (BOMB, "aliases expand the document beyond 100000 nodes"),
        (CYCLE, "an alias refers to a node that contains it"),
        (DEEP, "nested deeper than 64 levels"),
    ],
)
def test_documents_over_a_limit_are_refused_before_they_are_built(text: str, reason: str) -> None:
    started = time.perf_counter()
    with pytest.raises(yamldocs.LimitExceeded, match=reason):
        yamldocs.load_all(text)
    assert time.perf_counter() - started < 1
    assert isinstance(yamldocs.LimitExceeded(reason), yaml.YAMLError)


def test_text_longer_than_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamldocs, "MAX_TEXT_CHARS", 100)
    with pytest.raises(yamldocs.LimitExceeded, match="more than 100 characters"):
        yamldocs.load_all(yaml.safe_dump(minimal()))


def test_ordinary_anchors_and_documents_still_load() -> None:
    text = "a: &x {b: 1}\nc: *x\nd: [*x, *x]\n---\n---\nkind: McpServer\n"
    assert yamldocs.load_all(text) == [
        {"a": {"b": 1}, "c": {"b": 1}, "d": [{"b": 1}, {"b": 1}]},
        {"kind": "McpServer"},
    ]
    # A large document without aliases is bounded by its size only.
    many = {"items": [{"k": i} for i in range(40_000)]}  # 120,001 nodes
    assert yamldocs.load_all(json.dumps(many)) == [many]


def test_a_registry_file_over_a_limit_is_reported_with_its_name(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(minimal()))
    (tmp_path / "bomb.yaml").write_text(BOMB)
    with pytest.raises(Invalid) as error:
        load_directory(tmp_path)
    [problem] = error.value.problems
    assert problem.file == str(tmp_path / "bomb.yaml")
    assert problem.reason.startswith("cannot read YAML: aliases expand the document beyond 100000 nodes")


async def test_the_admin_api_refuses_a_yaml_body_over_a_limit(api: Api) -> None:
    for text in (BOMB, CYCLE, DEEP):
        status, body, _ = await api.call(
            "PUT", "/v1/servers/default/svc", text, headers={"Content-Type": "application/yaml"}
        )
        assert status == 400 and body["error"].startswith("malformed YAML: "), body
