"""Resolve the credentials a registry snapshot references (inline, environment variable, file).

Resolution is I/O, so it happens here, before the pure translator runs; a credential that
cannot be read rejects the whole snapshot with the file and field that references it, and the
value itself never appears in any message.
"""

from __future__ import annotations

import os
from pathlib import Path

from mcpgw.registry.model import RegistrySnapshot, Secret
from mcpgw.registry.reader import Invalid, Problem, credential_problem


def resolve(snapshot: RegistrySnapshot) -> dict[Secret, str]:
    values: dict[Secret, str] = {}
    problems: list[Problem] = []
    for secret in snapshot.secrets():
        file, _, field = secret.where.rpartition(": ")
        try:
            values[secret] = _read(secret)
        except LookupError as error:
            problems.append(Problem(file, field, str(error)))
            continue
        # Inline values were checked when the document was read; these are the file's or
        # variable's content, which only now is known.
        problem = credential_problem(values[secret])
        if problem is not None:
            problems.append(Problem(file, field, problem))
    if problems:
        raise Invalid(problems)
    return values


def _read(secret: Secret) -> str:
    if secret.kind == "inline":
        return secret.ref
    if secret.kind == "env":
        value = os.environ.get(secret.ref)
        if not value:
            raise LookupError(f"environment variable {secret.ref} is not set or empty")
        return value
    try:
        # Secrets mounted as files usually end with a newline that is not part of the secret.
        value = Path(secret.ref).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as error:
        raise LookupError(f"cannot read credential file {secret.ref}: {error.__class__.__name__}") from error
    if not value:
        raise LookupError(f"credential file {secret.ref} is empty")
    return value
