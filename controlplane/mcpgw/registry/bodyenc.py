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

An XML body (`application/xml`, `text/xml`, `*/*+xml`, so SOAP too) is followed through its
markup the same way (`_XmlScanner`):

- in element text or a quoted attribute value: `xml` (`& < > " '` and tab, newline, carriage
  return as references), except values the operator wrote in element text, which stay `raw`;
- inside a CDATA section: `xml_cdata` (the section is ended and reopened around `]` and `>`),
  except right after a `]` of the template, where an empty value would let that `]` and the
  text after it end the section: refused;
- anywhere else (a tag or attribute name, an unquoted attribute value, a comment, a reference,
  a declaration or processing instruction, text outside the root element): refused;
- as for JSON, a body that is one output and nothing else stays `raw`, and a body with no
  output at all is not checked (the operator's markup is sent as written).

Other content types (`text/plain`, …) have no structure to escape and are inserted raw.
`requestTemplate.rawBody: true` keeps raw insertion for a tool whose values are meant to be JSON
or XML text (the document opts out explicitly).
"""

from __future__ import annotations

from collections.abc import Mapping

from mcpgw.registry import templates

RAW, JSON, JSON_STRING, QUERY = "raw", "json", "json_string", "query"
XML, XML_CDATA = "xml", "xml_cdata"
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


def is_xml(media_type: str) -> bool:
    essence = media_type.split(";", 1)[0].strip().lower()
    return essence in ("application/xml", "text/xml") or ("/" in essence and essence.endswith("+xml"))


def encodings(nodes: tuple[templates.Node, ...], media_type: str, raw_body: bool) -> dict[int, str]:
    """`id(output node) → enc` for every output of a body template; raises `TemplateError`.

    Outputs not in the map keep the caller's default (`raw`).
    """
    if raw_body:
        return {}
    essence = media_type.split(";", 1)[0].strip().lower()
    if essence == FORM:
        return {id(node): RAW if _already_escaped(node.expr) else QUERY for node in _outputs(nodes)}
    if is_xml(media_type):
        return _xml_encodings(nodes)
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


# --- XML ------------------------------------------------------------------------------------

# Scanner modes: where in the markup the text is. The description names it in messages.
_X_TEXT = "element text"
_X_REF = "a reference in element text"
_X_TAG_OPEN = "the start of a tag"
_X_TAG_NAME = "a tag name"
_X_IN_TAG = "an attribute name or the end of a tag"
_X_ATTR_NAME = "an attribute name"
_X_AFTER_NAME = "'=' after an attribute name"
_X_BEFORE_VALUE = "a quoted attribute value"
_X_VALUE = {'"': 'an attribute value in "…"', "'": "an attribute value in '…'"}
_X_VALUE_REF = {'"': 'a reference in "…"', "'": "a reference in '…'"}
_X_EMPTY_END = "'>' after '/' in a tag"
_X_END_TAG = "a closing tag"
_X_DECL = "a declaration (<!…)"
_X_COMMENT = "a comment"
_X_CDATA = "a CDATA section"
_X_PI = "a processing instruction"
_X_DOCTYPE = "a DOCTYPE declaration"
_X_SUBSET = "a DOCTYPE internal subset"
# Where an output is, in refusals, when the mode's own name would mislead.
_X_OUTPUT_WHERE = {
    _X_TAG_OPEN: "in a tag name",
    _X_IN_TAG: "where an attribute name is expected",
    _X_AFTER_NAME: "between an attribute name and '='",
    _X_BEFORE_VALUE: "in an unquoted attribute value (XML quotes them)",
    _X_EMPTY_END: "after '/' in a tag",
}

# (mode, partial, depth): partial holds what was read of a terminator (`-->`, `]]>`, `?>`) or of
# the keyword after `<!`; depth counts open elements.
_XState = tuple[str, str, int]
_X_NOT_NAME = set("<>/=\"'&") | set(" \t\r\n")


def _xml_encodings(nodes: tuple[templates.Node, ...]) -> dict[int, str]:
    meaningful = [n for n in nodes if not (isinstance(n, templates.Text) and not n.value.strip())]
    if not _outputs(nodes) or (len(meaningful) == 1 and isinstance(meaningful[0], templates.Output)):
        return {}
    found: dict[int, str] = {}
    mode, _, depth = _XmlScanner(found).block(nodes, (_X_TEXT, "", 0))
    if mode != _X_TEXT or depth:
        where = f"inside {mode}" if mode != _X_TEXT else f"with {depth} element(s) still open"
        raise templates.TemplateError(
            f"XML body: the document is incomplete, it ends {where}"
            " (write well-formed XML around the {{ }} values, or set rawBody: true)"
        )
    return found


class _XmlScanner:
    """Follows XML markup through a template's text, recording each output's context.

    It decides contexts only: it does not check that closing tags match opening ones.
    """

    def __init__(self, found: dict[int, str]) -> None:
        self.found = found
        self.before = ""
        self.range_depth = 0

    def block(self, nodes: tuple[templates.Node, ...], state: _XState) -> _XState:
        for node in nodes:
            if isinstance(node, templates.Text):
                state = self.text(node.value, state)
                self.before = (self.before + node.value)[-24:]
            elif isinstance(node, templates.Output):
                state = self.output(node, state)
                self.before = (self.before + "{{…}}")[-24:]
            elif isinstance(node, templates.If):
                then = self.block(node.then, state)
                otherwise = self.block(node.otherwise, state)
                if then != otherwise:
                    raise templates.TemplateError(
                        "XML body: the branches of an 'if' leave the document in different places"
                        f" (one in {_x_where(then)}, the other in {_x_where(otherwise)});"
                        " keep each branch's markup complete, or set rawBody: true"
                    )
                state = then
            else:
                self.range_depth += 1
                body = self.block(node.body, state)
                self.range_depth -= 1
                otherwise = self.block(node.otherwise, state)
                if body != state or otherwise != state:
                    end = body if body != state else otherwise
                    raise templates.TemplateError(
                        "XML body: the body of a 'range' must leave the document where it started"
                        f" (it starts in {_x_where(state)}, ends in {_x_where(end)}); or set rawBody: true"
                    )
        return state

    def output(self, node: templates.Output, state: _XState) -> _XState:
        mode, partial, depth = state
        trusted = _operator_written(node.expr, self.range_depth > 0)
        if mode == _X_TEXT and (depth or trusted):
            self.found[id(node)] = RAW if trusted else XML
            return state
        if mode in _X_VALUE.values():
            self.found[id(node)] = XML
            return state
        if mode == _X_CDATA and not partial:
            # The encoding reopens the section around the value's own ']' and '>', so the
            # value ends any run of ']'. Right after a ']' of the text, an empty value would
            # let that ']' and the text after the value form ']]>': refused below.
            self.found[id(node)] = XML_CDATA
            return state
        where = "outside the root element" if mode == _X_TEXT else _X_OUTPUT_WHERE.get(mode, f"in {mode}")
        if mode == _X_CDATA:
            where = "right after ']' in a CDATA section (with the text after it, it could end the section)"
        raise templates.TemplateError(
            f"XML body: a {{{{ }}}} value after {self.before!r} sits {where}, where no escaping"
            " makes it safe; put it in element text or a quoted attribute value, or set rawBody: true"
        )

    def text(self, text: str, state: _XState) -> _XState:
        mode, partial, depth = state
        for position, char in enumerate(text):
            space = char in " \t\r\n"
            if mode == _X_TEXT:
                if char == "<":
                    mode = _X_TAG_OPEN
                elif char == "&":
                    mode = _X_REF
            elif mode == _X_REF:
                if char == ";":
                    mode = _X_TEXT
            elif mode in _X_VALUE.values():
                quote = '"' if mode == _X_VALUE['"'] else "'"
                if char == quote:
                    mode = _X_IN_TAG
                elif char == "&":
                    mode = _X_VALUE_REF[quote]
            elif mode in _X_VALUE_REF.values():
                if char == ";":
                    mode = _X_VALUE['"'] if mode == _X_VALUE_REF['"'] else _X_VALUE["'"]
            elif mode == _X_TAG_OPEN:
                if char == "/":
                    mode = _X_END_TAG
                elif char == "!":
                    mode, partial = _X_DECL, ""
                elif char == "?":
                    mode, partial = _X_PI, ""
                elif char in _X_NOT_NAME:
                    self.fail(text, position, mode)
                else:
                    mode = _X_TAG_NAME
            elif mode in (_X_TAG_NAME, _X_IN_TAG, _X_ATTR_NAME):
                if char == ">":
                    mode, depth = _X_TEXT, depth + 1
                elif char == "/" and mode != _X_ATTR_NAME:
                    mode = _X_EMPTY_END
                elif space:
                    mode = _X_AFTER_NAME if mode == _X_ATTR_NAME else _X_IN_TAG
                elif char == "=" and mode == _X_ATTR_NAME:
                    mode = _X_BEFORE_VALUE
                elif char in _X_NOT_NAME:
                    self.fail(text, position, mode)
                elif mode == _X_IN_TAG:
                    mode = _X_ATTR_NAME
            elif mode == _X_AFTER_NAME:
                if char == "=":
                    mode = _X_BEFORE_VALUE
                elif not space:
                    self.fail(text, position, mode)
            elif mode == _X_BEFORE_VALUE:
                if char in _X_VALUE:
                    mode = _X_VALUE[char]
                elif not space:
                    self.fail(text, position, mode)
            elif mode == _X_EMPTY_END:
                if char != ">":
                    self.fail(text, position, mode)
                mode = _X_TEXT
            elif mode == _X_END_TAG:
                if char == ">":
                    if not depth:
                        self.fail(text, position, "an element to close")
                    mode, depth = _X_TEXT, depth - 1
                elif char in "<&\"'=":
                    self.fail(text, position, mode)
            elif mode == _X_DECL:
                partial += char
                if partial == "--":
                    mode, partial = _X_COMMENT, ""
                elif partial == "[CDATA[":
                    mode, partial = _X_CDATA, ""
                elif partial == "DOCTYPE":
                    mode, partial = _X_DOCTYPE, ""
                elif not any(k.startswith(partial) for k in ("--", "[CDATA[", "DOCTYPE")):
                    self.fail(text, position, "'--', '[CDATA[' or 'DOCTYPE' after '<!'")
            elif mode == _X_COMMENT:
                # partial: the dashes read; '-->' ends the comment.
                if char == "-":
                    partial = partial[-1:] + "-"
                elif char == ">" and partial == "--":
                    mode, partial = _X_TEXT, ""
                else:
                    partial = ""
            elif mode == _X_CDATA:
                if char == "]":
                    partial = partial[-1:] + "]"
                elif char == ">" and partial == "]]":
                    mode, partial = _X_TEXT, ""
                else:
                    partial = ""
            elif mode == _X_PI:
                if char == ">" and partial == "?":
                    mode = _X_TEXT
                partial = "?" if char == "?" else ""
            elif mode == _X_DOCTYPE:
                if char == "[":
                    mode = _X_SUBSET
                elif char == ">":
                    mode = _X_TEXT
            elif mode == _X_SUBSET and char == "]":
                mode = _X_DOCTYPE
        return mode, partial, depth

    def fail(self, text: str, position: int, expected: str) -> None:
        context = (self.before + text[:position])[-24:]
        raise templates.TemplateError(
            f"XML body: {text[position]!r} after {context!r} is not well-formed XML (expected {expected});"
            " write well-formed XML around the {{ }} values, or set rawBody: true"
        )


def _x_where(state: _XState) -> str:
    mode, _, depth = state
    return f"{mode} at depth {depth}" if mode == _X_TEXT else mode


def output_encodings(
    nodes: tuple[templates.Node, ...],
    headers: tuple[tuple[str, tuple[templates.Node, ...]], ...],
    raw_body: bool,
) -> Mapping[int, str]:
    """The encodings of a request body template, as the translator emits them."""
    return encodings(nodes, content_type(headers) or "application/json", raw_body)
