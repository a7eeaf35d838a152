"""Loaders for MovieLens files: the 100K format and the ``ml-latest-small`` CSV format.

Every problem raises :class:`MovieLensFormatError` naming the file and the line. Files are parsed
completely before anything is written, so a corrupt file never leaves a half-loaded database.
"""

from __future__ import annotations

import csv
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from recsys.data.dataset import SourceDataset

ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
log = logging.getLogger(__name__)
_YEAR = re.compile(r"\((\d{4})\)\s*$")


class MovieLensFormatError(ValueError):
    """A MovieLens file is missing or malformed; the message names the file and line."""


def _require(path: Path) -> Path:
    if not path.is_file():
        raise MovieLensFormatError(f"{path}: file not found")
    return path


def _fail(path: Path, line: int, why: str) -> MovieLensFormatError:
    return MovieLensFormatError(f"{path}:{line}: {why}")


def _read_lines(path: Path, encoding: str, sep: str, min_fields: int) -> list[tuple[int, list[str]]]:
    rows = []
    try:
        text = _require(path).read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise MovieLensFormatError(f"{path}: not valid {encoding} text ({exc.reason})") from exc
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines(): latin-1 text holds \x85
        if not line.strip():
            continue
        fields = line.split(sep)
        if len(fields) < min_fields:
            raise _fail(path, number, f"expected at least {min_fields} fields separated by {sep!r}, got {len(fields)}")
        rows.append((number, fields))
    return rows


def _number(path: Path, line: int, name: str, value: str, kind: type = int):
    try:
        return kind(value)
    except ValueError:
        raise _fail(path, line, f"{name} {value!r} is not a valid {kind.__name__}") from None


def _ratings(path: Path, rows: list[tuple[int, list[str]]]) -> list[dict]:
    out = []
    for line, (user, item, rating, ts, *_rest) in rows:
        value = _number(path, line, "rating", rating, float)
        seconds = _number(path, line, "timestamp", ts, int)
        if not user.strip() or not item.strip():
            raise _fail(path, line, "empty user or item id")
        out.append(
            {
                "user_id": user.strip(),
                "item_id": item.strip(),
                "event_type": "rating",
                "event_value": value,
                "occurred_at": datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None),
            }
        )
    if not out:
        raise MovieLensFormatError(f"{path}: no ratings found")
    return out


def load_ml100k(directory: Path) -> SourceDataset:
    """Parse ``u.data``, ``u.item`` (latin-1) and ``u.user`` of the 100K release."""
    directory = Path(directory)
    data_path, item_path, user_path = directory / "u.data", directory / "u.item", directory / "u.user"
    ratings = _ratings(data_path, _read_lines(data_path, "utf-8", "\t", 4))
    items = []
    for line, fields in _read_lines(item_path, "latin-1", "|", 5 + len(ML100K_GENRES)):
        flags = fields[5 : 5 + len(ML100K_GENRES)]
        if any(flag not in {"0", "1"} for flag in flags):
            raise _fail(item_path, line, "genre flags must be 0 or 1")
        year = _YEAR.search(fields[1])
        items.append(
            {
                "item_id": fields[0].strip(),
                "title": fields[1].strip(),
                "genres": "|".join(g for g, flag in zip(ML100K_GENRES, flags, strict=True) if flag == "1"),
                "release_year": int(year.group(1)) if year else None,
            }
        )
    users = []
    for line, fields in _read_lines(user_path, "latin-1", "|", 4):
        users.append(
            {
                "user_id": fields[0].strip(),
                "age": _number(user_path, line, "age", fields[1]),
                "gender": fields[2].strip(),
                "occupation": fields[3].strip(),
            }
        )
    _warn_unknown_items(data_path, ratings, items)
    return SourceDataset(users=users, items=items, interaction_chunks=lambda: iter([ratings]))


def _warn_unknown_items(path: Path, ratings: list[dict], items: list[dict]) -> None:
    unknown = {r["item_id"] for r in ratings} - {i["item_id"] for i in items}
    if unknown:
        log.warning(
            "%s: ratings reference %d item id(s) without metadata: %s", path, len(unknown), sorted(unknown)[:10]
        )


def _read_csv(path: Path, header: list[str]) -> list[tuple[int, list[str]]]:
    with _require(path).open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            first = next(reader)
        except StopIteration:
            raise MovieLensFormatError(f"{path}: file is empty") from None
        except csv.Error as exc:
            raise _fail(path, 1, f"unreadable CSV ({exc})") from None
        if first[: len(header)] != header:
            raise _fail(path, 1, f"expected header {','.join(header)}, got {','.join(first)}")
        rows = []
        try:
            for fields in reader:
                if len(fields) < len(header):
                    raise _fail(path, reader.line_num, f"expected {len(header)} fields, got {len(fields)}")
                rows.append((reader.line_num, fields))
        except csv.Error as exc:
            raise _fail(path, reader.line_num, f"unreadable CSV ({exc})") from None
        return rows


def load_ml_latest_small(directory: Path) -> SourceDataset:
    """Parse ``ratings.csv`` and ``movies.csv`` of ``ml-latest-small`` (no user metadata there)."""
    directory = Path(directory)
    ratings_path, movies_path = directory / "ratings.csv", directory / "movies.csv"
    ratings = _ratings(ratings_path, _read_csv(ratings_path, ["userId", "movieId", "rating", "timestamp"]))
    items = []
    for _line, (movie_id, title, genres, *_rest) in _read_csv(movies_path, ["movieId", "title", "genres"]):
        year = _YEAR.search(title)
        items.append(
            {
                "item_id": movie_id.strip(),
                "title": title.strip(),
                "genres": "" if genres == "(no genres listed)" else genres,
                "release_year": int(year.group(1)) if year else None,
            }
        )
    users = [{"user_id": u} for u in sorted({r["user_id"] for r in ratings}, key=_natural)]
    _warn_unknown_items(ratings_path, ratings, items)
    return SourceDataset(users=users, items=items, interaction_chunks=lambda: iter([ratings]))


def _natural(value: str) -> tuple[int, str]:
    return (int(value), value) if value.isdigit() else (1 << 62, value)


def detect_and_load(directory: Path) -> SourceDataset:
    """Load whichever MovieLens format ``directory`` holds."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MovieLensFormatError(f"{directory}: directory not found")
    if (directory / "u.data").exists():
        return load_ml100k(directory)
    if (directory / "ratings.csv").exists():
        return load_ml_latest_small(directory)
    raise MovieLensFormatError(f"{directory}: neither u.data (100K format) nor ratings.csv (latest-small) found")


def retime(dataset: SourceDataset, days: int, end: datetime) -> SourceDataset:
    """Linearly map the ratings' time span onto ``[end - days, end)``, keeping their order."""
    rows = [row for chunk in dataset.interaction_chunks() for row in chunk]
    first = min(r["occurred_at"] for r in rows)
    last = max(r["occurred_at"] for r in rows)
    span = max((last - first).total_seconds(), 1.0)
    target = timedelta(days=days).total_seconds() - 1.0
    start = end - timedelta(days=days)
    moved = [
        {**r, "occurred_at": start + timedelta(seconds=(r["occurred_at"] - first).total_seconds() / span * target)}
        for r in rows
    ]
    return SourceDataset(users=dataset.users, items=dataset.items, interaction_chunks=lambda: iter([moved]))
