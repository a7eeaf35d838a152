"""Deterministic, valid Personalize resource names.

Personalize has no client token: a name is the only idempotency key, it must match
``^[a-zA-Z0-9][a-zA-Z0-9\\-_]*`` with 1-63 characters, and a taken name raises
``ResourceAlreadyExistsException`` even when that job failed. So a name is derived from the run
(the same on every retry), and a new attempt after a *failed* job gets the suffix ``-2``, ``-3``...
"""

from __future__ import annotations

import hashlib
import re

MAX_LENGTH = 63
VALID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9\-_]*$")


def run_name(prefix: str, run_id: str, *parts: str) -> str:
    """``<prefix>-<parts>-<8 hex of run_id>``, valid and at most 59 characters (room for ``-NN``)."""
    digest = hashlib.sha1(run_id.encode()).hexdigest()[:8]
    body = "-".join(re.sub(r"[^a-zA-Z0-9_-]+", "-", p).strip("-_") for p in (prefix, *parts) if p)
    name = f"{body[: MAX_LENGTH - 4 - 9]}-{digest}"
    if not VALID.match(name):
        raise ValueError(f"cannot build a valid Personalize name from {prefix!r}, {parts!r}")
    return name


def attempt_name(base: str, attempt: int) -> str:
    return base if attempt <= 1 else f"{base}-{attempt}"


def attempt_of(base: str, name: str) -> int | None:
    """1 for ``base``, N for ``base-N``, ``None`` for any other name."""
    if name == base:
        return 1
    suffix = name[len(base) + 1 :] if name.startswith(base + "-") else ""
    return int(suffix) if suffix.isdigit() else None
