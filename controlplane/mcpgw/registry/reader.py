"""Reading untrusted documents field by field, remembering where each problem is.

Every problem carries the file, the field path (`tools[1].requestTemplate.url`) and a reason;
all problems of a document are collected, so one edit can fix them all.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mcpgw.registry import templates
from mcpgw.registry.headers import value_problem
from mcpgw.registry.model import Secret, SecretFormat
from mcpgw.registry.tls import pem_problem


@dataclass(frozen=True)
class Problem:
    file: str
    path: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        return f"{where}{self.path or '<document>'}: {self.reason}"


class Invalid(Exception):
    """Raised with every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    return names.get(type(value), f"a {type(value).__name__}")


def credential_problem(value: str) -> str | None:
    """Why a credential's value (inline, from a file or the environment) can never be sent.

    Every credential may end up in a header (the scheme decides, and a scheme is shared), so
    its value must be a header value: a file with a second line, a pasted CR/LF, is refused
    here rather than by the filter, or by Envoy on every call.
    """
    problem = value_problem(value)
    return f"the credential {problem}" if problem is not None else None


def secret_problem(fmt: SecretFormat, value: str) -> str | None:
    """Why a secret's value cannot be used as `fmt`: a header value, PEM certificates or a PEM key."""
    if fmt == "header":
        return credential_problem(value)
    return pem_problem(fmt, value)


class Reader:
    """Reads fields of nested mappings, collecting problems instead of stopping at the first."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        # Accepted, but worth the operator's attention (e.g. TLS verification turned off).
        self.warnings: list[Problem] = []

    def fail(self, path: str, reason: str) -> None:
        self.problems.append(Problem(self.file, path, reason))

    def warn(self, path: str, reason: str) -> None:
        self.warnings.append(Problem(self.file, path, reason))

    def mapping(self, value: Any, path: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping, got {kind(value)}")
            return None
        for key in value:
            if not isinstance(key, str):
                self.fail(path, f"keys must be strings, got {key!r}")
                return None
        return value

    def mappings(self, value: Any, path: str, expected: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Each mapping of a list with its field path; a non-list or non-mapping item is a problem."""
        if not isinstance(value, list):
            self.fail(path, f"must be a list of {expected}, got {kind(value)}")
            return
        for index, item in enumerate(value):
            item_path = join(path, index)
            data = self.mapping(item, item_path)
            if data is not None:
                yield item_path, data

    def only(self, data: dict[str, Any], path: str, allowed: set[str]) -> None:
        for key in data:
            if key not in allowed:
                self.fail(join(path, key), f"unknown field (allowed: {', '.join(sorted(allowed))})")

    def string(
        self,
        data: dict[str, Any],
        key: str,
        path: str,
        *,
        required: bool = False,
        default: str | None = None,
        pattern: re.Pattern[str] | None = None,
        hint: str = "",
        choices: tuple[str, ...] = (),
    ) -> str | None:
        field_path = join(path, key)
        if key not in data or data[key] is None:
            if required:
                self.fail(field_path, "is required")
            return default
        value = data[key]
        if not isinstance(value, str):
            self.fail(field_path, f"must be a string, got {kind(value)}")
            return default
        if choices and value not in choices:
            self.fail(field_path, f"must be one of {', '.join(choices)}, got {value!r}")
            return default
        # The whole value: `$` alone would also accept a trailing newline.
        if pattern is not None and not pattern.fullmatch(value):
            self.fail(field_path, f"{value!r} is not valid{': ' + hint if hint else ''}")
            return default
        return value

    def boolean(self, data: dict[str, Any], key: str, path: str) -> bool:
        value = data.get(key, False)
        if not isinstance(value, bool):
            self.fail(join(path, key), f"must be true or false, got {kind(value)}")
            return False
        return value

    def secret(
        self, data: dict[str, Any], key: str, path: str, fmt: SecretFormat = "header"
    ) -> Secret | None:
        """A credential: a string (inline, as Higress writes it), or `{env: NAME}` / `{file: PATH}`.

        `fmt` is what the value must be; a file's or variable's is checked when it is read.
        """
        field_path = join(path, key)
        value = data.get(key)
        where = f"{self.file}: {field_path}" if self.file else field_path
        if value is None:
            return None
        if isinstance(value, str):
            # Never echo the value: it is a credential.
            if not value:
                self.fail(field_path, "must not be empty")
                return None
            problem = secret_problem(fmt, value)
            if problem is not None:
                self.fail(field_path, problem)
                return None
            return Secret("inline", value, where, fmt)
        if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("env", "file"):
            source, ref = next(iter(value.items()))
            if not isinstance(ref, str) or not ref:
                self.fail(join(field_path, source), "must be a non-empty string")
                return None
            return Secret(source, ref, where, fmt)
        what = "a credential string" if fmt == "header" else "a PEM string"
        self.fail(field_path, f"must be {what}, {{env: NAME}} or {{file: PATH}}")
        return None

    def template(
        self, source: str, path: str, template_kind: str, config: dict[str, str]
    ) -> tuple[templates.Node, ...] | None:
        """Parse and check every reference now, so a template that validates also renders."""
        try:
            nodes = templates.parse(source)
            for expr, depth in templates.walk_exprs(nodes):
                if isinstance(expr, templates.Field):
                    reference = templates.classify(expr, template_kind, in_range=depth > 0)
                    if reference.source == "config" and reference.path[0] not in config:
                        key = reference.path[0]
                        raise templates.TemplateError(
                            f"'.config.{key}' but the server's config has no {key!r}"
                        )
        except templates.TemplateError as error:
            self.fail(path, f"template: {error}")
            return None
        return nodes
