"""Validation of Vertex AI prediction requests: ``{"instances": [...], "parameters": {...}}``.

An instance is a user id (string) or an object ``{"user_id": ..., "gender"?, "occupation"?, "age"?,
"recent_item_ids"?, "recent_timestamps"?}``: ``recent_item_ids`` are the user's newest events not
yet in the model's history snapshot (newest last, at most ``MAX_RECENT_ITEMS``);
``recent_timestamps`` (epoch seconds, one per item) optionally orders them among the snapshot.
Parameters: ``k`` (1..the exported k) and ``exclude_item_ids`` (list of item ids).
Every problem raises :class:`BadRequest` with a message that says what is wrong and where.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_BODY_BYTES = 1_500_000  # Vertex AI online prediction request limit (1.5 MB)
MAX_INSTANCES = 1000
MAX_EXCLUSIONS = 1000
MAX_ID_LENGTH = 256
MAX_RECENT_ITEMS = 500
DEFAULT_K = 10


class BadRequest(ValueError):
    """The request is malformed; the message is returned to the client with HTTP 400."""


@dataclass(frozen=True)
class Instance:
    user_id: str
    gender: str | None = None
    occupation: str | None = None
    age: int | None = None
    recent_item_ids: tuple[str, ...] = ()
    recent_timestamps: tuple[int, ...] | None = None


@dataclass(frozen=True)
class PredictRequest:
    instances: list[Instance]
    k: int = DEFAULT_K
    exclude_item_ids: frozenset[str] = field(default_factory=frozenset)


def _integer(value: Any) -> int | None:
    """An int, also when it arrives as an integral float: Vertex passes JSON numbers through
    ``protobuf.Value``, which holds doubles (``10`` becomes ``10.0``)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _text(value: Any, where: str, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{where} must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise BadRequest(f"{where} is longer than {MAX_ID_LENGTH} characters")
    if not _unicode(value):
        raise BadRequest(f"{where} is not valid Unicode text (a lone surrogate escape)")
    return value.strip()


def _unicode(value: str) -> bool:
    """False for a string JSON allows but UTF-8 cannot hold (a lone ``\\ud800`` escape; found by fuzzing)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _instance(raw: Any, index: int) -> Instance:
    where = f"instances[{index}]"
    if isinstance(raw, str):
        return Instance(_text(raw, where, required=True))
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} must be a user id string or an object with user_id")
    unknown = set(raw) - {"user_id", "gender", "occupation", "age", "recent_item_ids", "recent_timestamps"}
    if unknown:
        raise BadRequest(f"{where} has unknown field(s) {sorted(unknown)}")
    recent, stamps = _recent(raw, where)
    age = raw.get("age")
    if age is not None:
        age = _integer(age)
        if age is None or not 0 <= age <= 150:
            raise BadRequest(f"{where}.age must be an integer between 0 and 150")
    return Instance(
        _text(raw.get("user_id"), f"{where}.user_id", required=True),
        _text(raw.get("gender"), f"{where}.gender", required=False),
        _text(raw.get("occupation"), f"{where}.occupation", required=False),
        age,
        recent,
        stamps,
    )


def _recent(raw: dict, where: str) -> tuple[tuple[str, ...], tuple[int, ...] | None]:
    """``recent_item_ids`` (and optional ``recent_timestamps``), validated."""
    items = raw.get("recent_item_ids", [])
    if not isinstance(items, list):
        raise BadRequest(f"{where}.recent_item_ids must be a list of item id strings (newest last)")
    if len(items) > MAX_RECENT_ITEMS:
        raise BadRequest(f"{where}.recent_item_ids has {len(items)} items; at most {MAX_RECENT_ITEMS}")
    items = tuple(_text(item, f"{where}.recent_item_ids[{n}]", required=True) for n, item in enumerate(items))
    stamps = raw.get("recent_timestamps")
    if stamps is None:
        return items, None
    if not isinstance(stamps, list) or len(stamps) != len(items):
        raise BadRequest(f"{where}.recent_timestamps must be a list with one epoch-seconds value per recent item")
    values = tuple(_integer(v) for v in stamps)
    if any(v is None or v < 0 for v in values):
        raise BadRequest(f"{where}.recent_timestamps must hold non-negative integers (epoch seconds)")
    return items, values


def parse_request(body: Any, max_k: int) -> PredictRequest:
    """Validate a decoded JSON body."""
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object like {"instances": [...]}')
    unknown = set(body) - {"instances", "parameters"}
    if unknown:
        raise BadRequest(f"unknown top-level field(s) {sorted(unknown)}; expected instances and parameters")
    instances = body.get("instances")
    if not isinstance(instances, list) or not instances:
        raise BadRequest("instances must be a non-empty list")
    if len(instances) > MAX_INSTANCES:
        raise BadRequest(f"at most {MAX_INSTANCES} instances per request, got {len(instances)}")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest("parameters must be an object")
    unknown = set(parameters) - {"k", "exclude_item_ids"}
    if unknown:
        raise BadRequest(f"unknown parameter(s) {sorted(unknown)}; expected k and exclude_item_ids")
    raw_k = parameters.get("k", min(DEFAULT_K, max_k))
    k = _integer(raw_k)
    if k is None or not 1 <= k <= max_k:
        raise BadRequest(f"parameters.k must be an integer between 1 and {max_k}, got {raw_k!r}")
    exclude = parameters.get("exclude_item_ids", [])
    if not isinstance(exclude, list) or not all(isinstance(i, str) and _unicode(i) for i in exclude):
        raise BadRequest("parameters.exclude_item_ids must be a list of item id strings")
    if len(exclude) > MAX_EXCLUSIONS:
        raise BadRequest(f"at most {MAX_EXCLUSIONS} exclude_item_ids, got {len(exclude)}")
    return PredictRequest([_instance(raw, i) for i, raw in enumerate(instances)], k, frozenset(exclude))
