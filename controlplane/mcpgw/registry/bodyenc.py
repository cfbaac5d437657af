"""How each `{{ }}` output of a request body template is encoded, decided from where it sits.

Higress inserts values raw, so `{"q": "{{.args.q}}"}` with `q = x", "role": "admin` sends a
second key. As Go's html/template does for HTML, the gateway escapes by context instead: the
template text is known here, at validation, so the JSON context of every output of a JSON body
is decided once and handed to the filter as the output's `enc` (CONFIG.md):

- inside a quoted JSON string (value or key): `json_string`, the characters between the quotes;
- where a JSON value is expected: `json`, the value itself (strings quoted, numbers bare,
  objects and arrays as JSON), except `toJson` and `quote`, whose result already is JSON, and
  values the operator wrote (`.config.x`, literals), which stay `raw` as Higress inserts them;
- anywhere else (a bare key, after a value, inside a number or `true`): refused, since no
  encoding makes a value safe there;
- a body that is one output and nothing else (`{{.args.body}}`) is the client's whole document
  by design and stays `raw`.

A form body (`application/x-www-form-urlencoded`) gets `query` (percent-encoding) for every
output, so `&` and `=` in a value cannot add a field; `urlquery` output is already encoded.
Other content types are inserted raw, as before. `requestTemplate.rawBody: true` keeps raw
insertion for a tool whose values are meant to be JSON text (the document opts out explicitly).
"""

from __future__ import annotations

from collections.abc import Mapping

from mcpgw.registry import templates

RAW, JSON, JSON_STRING, QUERY = "raw", "json", "json_string", "query"
FORM = "application/x-www-form-urlencoded"

# Scanner modes: what the JSON text expects next.
_VALUE = "a value"
_KEY = "a key"
_STRING = "a string"
_KEY_STRING = "a key string"
_ESCAPE = "an escape sequence"
_KEY_ESCAPE = "a key escape sequence"
_AFTER_VALUE = "',' or the end of an object or array"
_AFTER_KEY = "':'"
_LITERAL = "a number or literal"

_State = tuple[str, tuple[str, ...]]  # (mode, open brackets)


def content_type(headers: tuple[tuple[str, tuple[templates.Node, ...]], ...]) -> str | None:
    """The literal `content-type` header of a request template, if it has one."""
    for name, nodes in headers:
        if name == "content-type" and all(isinstance(n, templates.Text) for n in nodes):
            return "".join(n.value for n in nodes if isinstance(n, templates.Text))
    return None


def is_json(media_type: str) -> bool:
    essence = media_type.split(";", 1)[0].strip().lower()
    return essence == "application/json" or (essence.startswith("application/") and essence.endswith("+json"))


def encodings(nodes: tuple[templates.Node, ...], media_type: str, raw_body: bool) -> dict[int, str]:
    """`id(output node) → enc` for every output of a body template; raises `TemplateError`.

    Outputs not in the map keep the caller's default (`raw`).
    """
    if raw_body:
        return {}
    essence = media_type.split(";", 1)[0].strip().lower()
    if essence == FORM:
        return {id(node): RAW if _already_escaped(node.expr) else QUERY for node in _outputs(nodes)}
    if not is_json(media_type):
        return {}
    meaningful = [n for n in nodes if not (isinstance(n, templates.Text) and not n.value.strip())]
    if len(meaningful) == 1 and isinstance(meaningful[0], templates.Output):
        return {}
    found: dict[int, str] = {}
    end = _Scanner(found).block(nodes, (_VALUE, ()))
    mode, stack = end
    if mode == _LITERAL:
        mode = _AFTER_VALUE
    if stack or mode != _AFTER_VALUE:
        raise templates.TemplateError(
            f"JSON body: the document is incomplete, it ends where JSON expects {mode}"
            " (write valid JSON around the {{ }} values, or set rawBody: true)"
        )
    return found


def _already_escaped(expr: templates.Expr) -> bool:
    return isinstance(expr, templates.Call) and expr.name == "urlquery"


def _outputs(nodes: tuple[templates.Node, ...]) -> list[templates.Output]:
    found: list[templates.Output] = []
    for node in nodes:
        if isinstance(node, templates.Output):
            found.append(node)
        elif isinstance(node, templates.If):
            found += _outputs(node.then) + _outputs(node.otherwise)
        elif isinstance(node, templates.Range):
            found += _outputs(node.body) + _outputs(node.otherwise)
    return found


class _Scanner:
    """Follows the JSON grammar through a template's text, recording each output's context."""

    def __init__(self, found: dict[int, str]) -> None:
        self.found = found
        self.before = ""  # the text just before the current position, for messages
        self.range_depth = 0

    def block(self, nodes: tuple[templates.Node, ...], state: _State) -> _State:
        for node in nodes:
            if isinstance(node, templates.Text):
                state = self.text(node.value, state)
                self.before = (self.before + node.value)[-24:]
            elif isinstance(node, templates.Output):
                state = self.output(node, _end_literal(state))
                self.before = (self.before + "{{…}}")[-24:]
            elif isinstance(node, templates.If):
                start = _end_literal(state)
                then = self.block(node.then, start)
                otherwise = self.block(node.otherwise, start)
                if _end_literal(then) != _end_literal(otherwise):
                    raise templates.TemplateError(
                        "JSON body: the branches of an 'if' leave the document in different places"
                        f" (one expects {_end_literal(then)[0]}, the other {_end_literal(otherwise)[0]});"
                        " keep each branch's JSON complete, or set rawBody: true"
                    )
                state = _end_literal(then)
            else:
                start = _end_literal(state)
                self.range_depth += 1
                body = _end_literal(self.block(node.body, start))
                self.range_depth -= 1
                otherwise = _end_literal(self.block(node.otherwise, start))
                if body != start or otherwise != start:
                    end = body if body != start else otherwise
                    raise templates.TemplateError(
                        "JSON body: the body of a 'range' must leave the document where it started"
                        f" (it starts expecting {start[0]}, ends expecting {end[0]}); or set rawBody: true"
                    )
        return state

    def output(self, node: templates.Output, state: _State) -> _State:
        mode, stack = state
        if mode in (_STRING, _KEY_STRING):
            self.found[id(node)] = JSON_STRING
            return state
        if mode == _VALUE:
            is_json_text = isinstance(node.expr, templates.Call) and node.expr.name in ("toJson", "quote")
            trusted = _operator_written(node.expr, self.range_depth > 0)
            self.found[id(node)] = RAW if is_json_text or trusted else JSON
            return _AFTER_VALUE, stack
        where = "inside quotes" if mode == _KEY else "where a JSON value is expected"
        raise templates.TemplateError(
            f"JSON body: a {{{{ }}}} value after {self.before!r} sits where JSON expects {mode};"
            f" put it {where}, or set rawBody: true"
        )

    def text(self, text: str, state: _State) -> _State:
        mode, stack = state
        for position, char in enumerate(text):
            if mode in (_STRING, _KEY_STRING):
                if char == "\\":
                    mode = _ESCAPE if mode == _STRING else _KEY_ESCAPE
                elif char == '"':
                    mode = _AFTER_VALUE if mode == _STRING else _AFTER_KEY
                continue
            if mode in (_ESCAPE, _KEY_ESCAPE):
                mode = _STRING if mode == _ESCAPE else _KEY_STRING
                continue
            if mode == _LITERAL:
                if char.isalnum() or char in ".+-":
                    continue
                mode = _AFTER_VALUE
            if char in " \t\r\n":
                continue
            top = stack[-1] if stack else ""
            if mode == _VALUE:
                if char == "{":
                    mode, stack = _KEY, (*stack, "{")
                elif char == "[":
                    mode, stack = _VALUE, (*stack, "[")
                elif char == '"':
                    mode = _STRING
                elif char.isdigit() or char in "-tfn":
                    mode = _LITERAL
                elif char == "]" and top == "[":
                    mode, stack = _AFTER_VALUE, stack[:-1]
                else:
                    self.fail(text, position, mode)
            elif mode == _KEY:
                if char == '"':
                    mode = _KEY_STRING
                elif char == "}" and top == "{":
                    mode, stack = _AFTER_VALUE, stack[:-1]
                else:
                    self.fail(text, position, mode)
            elif mode == _AFTER_KEY:
                if char != ":":
                    self.fail(text, position, mode)
                mode = _VALUE
            else:  # _AFTER_VALUE
                if char == "," and top:
                    mode = _KEY if top == "{" else _VALUE
                elif char in "}]" and top == {"}": "{", "]": "["}[char]:
                    mode, stack = _AFTER_VALUE, stack[:-1]
                else:
                    self.fail(text, position, mode)
        return mode, stack

    def fail(self, text: str, position: int, mode: str) -> None:
        context = (self.before + text[:position])[-24:]
        raise templates.TemplateError(
            f"JSON body: {text[position]!r} after {context!r} is not valid JSON (expected {mode});"
            " write valid JSON around the {{ }} values, or set rawBody: true"
        )


def _operator_written(expr: templates.Expr, in_range: bool) -> bool:
    """Whether a value comes from the document only (literals, `.config`), never from a client."""
    if isinstance(expr, templates.Const):
        return True
    if isinstance(expr, templates.Call):
        return all(_operator_written(arg, in_range) for arg in expr.args)
    if in_range and not expr.from_root:
        return False
    return bool(expr.path) and expr.path[0] == "config"


def _end_literal(state: _State) -> _State:
    """A number or literal ends where a template action starts."""
    return (_AFTER_VALUE, state[1]) if state[0] == _LITERAL else state


def output_encodings(
    nodes: tuple[templates.Node, ...],
    headers: tuple[tuple[str, tuple[templates.Node, ...]], ...],
    raw_body: bool,
) -> Mapping[int, str]:
    """The encodings of a request body template, as the translator emits them."""
    return encodings(nodes, content_type(headers) or "application/json", raw_body)
