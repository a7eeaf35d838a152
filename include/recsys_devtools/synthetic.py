"""Deterministic synthetic interactions with structure a model can learn.

* Item popularity follows a power law (Zipf with exponent ``popularity_exponent``).
* Every item has a primary genre; every user has a taste cluster (a genre). With probability
  ``taste_affinity`` an event picks an item of the user's genre, otherwise any item, both by
  popularity. A two-tower model can learn the clusters; a popularity baseline cannot.
* User activity is log-normal, so a few users are very active.
* Timestamps are uniform over ``[end - days, end)``.
* ``malformed_fraction`` of the rows get one defect (missing user, unknown event type,
  non-finite value) so that the demo shows validation and quarantine at work.

The same seed and end give the same data on every machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np

from recsys.data.dataset import SourceDataset

GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Horror",
    "Romance",
    "Sci-Fi",
    "Thriller",
)
OCCUPATIONS = ("student", "engineer", "artist", "educator", "healthcare", "retired", "other")
EVENT_TYPES = ("view", "click", "add_to_cart", "purchase")
EVENT_TYPE_WEIGHTS = (0.60, 0.25, 0.10, 0.05)
_DEFECTS = (
    {"user_id": None},
    {"event_type": "unknown_event"},
    {"event_value": float("inf")},
)
_ADJECTIVES = ("Silent", "Golden", "Last", "Hidden", "Broken", "Electric", "Lost", "Red", "Wild")
_NOUNS = ("River", "Empire", "Garden", "Signal", "Horizon", "Machine", "Letter", "Storm", "City")


@dataclass(frozen=True)
class SyntheticSpec:
    """Size and shape of the synthetic data set."""

    users: int = 2_000
    items: int = 1_000
    interactions: int = 100_000
    days: int = 30
    seed: int = 42
    popularity_exponent: float = 1.0
    taste_affinity: float = 0.8
    malformed_fraction: float = 0.0
    chunk_rows: int = 50_000

    def __post_init__(self) -> None:
        for name in ("users", "items", "interactions", "days", "chunk_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("taste_affinity", "malformed_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def synthetic_dataset(spec: SyntheticSpec, end: datetime) -> SourceDataset:
    """Build the users, items and a lazily generated interaction stream ending at ``end`` (UTC)."""
    rng = np.random.default_rng(spec.seed)
    item_genre = rng.integers(0, len(GENRES), spec.items)
    second_genre = rng.integers(0, len(GENRES), spec.items)
    has_second = rng.random(spec.items) < 0.3
    years = rng.integers(1970, 2026, spec.items)
    popularity = 1.0 / np.arange(1, spec.items + 1) ** spec.popularity_exponent
    popularity = popularity[rng.permutation(spec.items)]

    items = []
    for i in range(spec.items):
        genres = [GENRES[item_genre[i]]]
        if has_second[i] and second_genre[i] != item_genre[i]:
            genres.append(GENRES[second_genre[i]])
        title = f"{_ADJECTIVES[i % len(_ADJECTIVES)]} {_NOUNS[(i // 9) % len(_NOUNS)]} {i}"
        items.append({"item_id": f"i{i}", "title": title, "genres": "|".join(genres), "release_year": int(years[i])})

    user_cluster = rng.integers(0, len(GENRES), spec.users)
    ages = rng.integers(16, 75, spec.users)
    genders = rng.choice(np.array(["F", "M", "X"]), spec.users, p=[0.48, 0.48, 0.04])
    occupations = rng.integers(0, len(OCCUPATIONS), spec.users)
    users = [
        {
            "user_id": f"u{u}",
            "age": int(ages[u]),
            "gender": str(genders[u]),
            "occupation": OCCUPATIONS[occupations[u]],
        }
        for u in range(spec.users)
    ]
    activity = rng.lognormal(0.0, 1.0, spec.users)
    activity /= activity.sum()

    start = end - timedelta(days=spec.days)

    def interaction_columns() -> Iterator[dict[str, np.ndarray]]:
        """Chunks of interactions as columns: user and item numbers, event type index, microseconds
        after ``start``, and which rows get which defect (the bulk loaders' fast path)."""
        chunk_rng = np.random.default_rng([spec.seed, 1])
        global_p = popularity / popularity.sum()
        genre_items = [np.flatnonzero(item_genre == g) for g in range(len(GENRES))]
        genre_p = [popularity[idx] / popularity[idx].sum() if len(idx) else None for idx in genre_items]
        span_us = spec.days * 86_400 * 1_000_000
        remaining = spec.interactions
        while remaining > 0:
            n = min(spec.chunk_rows, remaining)
            remaining -= n
            user = chunk_rng.choice(spec.users, n, p=activity)
            in_taste = chunk_rng.random(n) < spec.taste_affinity
            item = chunk_rng.choice(spec.items, n, p=global_p)
            for g, idx in enumerate(genre_items):
                rows = np.flatnonzero(in_taste & (user_cluster[user] == g))
                if len(rows) and len(idx):
                    item[rows] = chunk_rng.choice(idx, len(rows), p=genre_p[g])
            event = chunk_rng.choice(len(EVENT_TYPES), n, p=EVENT_TYPE_WEIGHTS)
            offsets = chunk_rng.integers(0, span_us, n)
            defective = np.flatnonzero(chunk_rng.random(n) < spec.malformed_fraction)
            defects = chunk_rng.integers(0, len(_DEFECTS), len(defective))
            yield {
                "user": user,
                "item": item,
                "event": event,
                "offset_us": offsets,
                "defective": defective,
                "defect": defects,
            }

    def interaction_chunks() -> Iterator[list[dict]]:
        for columns in interaction_columns():
            user, item, event, offsets = (columns[k] for k in ("user", "item", "event", "offset_us"))
            rows = [
                {
                    "user_id": f"u{user[k]}",
                    "item_id": f"i{item[k]}",
                    "event_type": EVENT_TYPES[event[k]],
                    "event_value": 1.0,
                    "occurred_at": start + timedelta(microseconds=int(offsets[k])),
                }
                for k in range(len(user))
            ]
            for k, defect in zip(columns["defective"], columns["defect"], strict=True):
                rows[k].update(_DEFECTS[defect])
            yield rows

    return SourceDataset(users, items, interaction_chunks, interaction_columns, start)


def extracted_lake(base, days: list, outage: date | None = None) -> str:
    """The tests' and benchmarks' small lake under ``base`` (a folder): 300 users, 150 items, 16,000 interactions
    over the 8 days before 2026-11-10 in a SQLite source, each of ``days`` extracted; ``outage``'s rows deleted
    first (an empty partition). Returns the storage root."""
    from sqlalchemy import create_engine

    from recsys.config import load_settings
    from recsys.data import schema
    from recsys.data.dataset import write_dataset
    from recsys.data.extract import QualityPolicy, publish_partition, stage_partition
    from recsys.data.validate import Interval

    engine = create_engine(f"sqlite:///{base / 'source.db'}")
    spec = SyntheticSpec(users=300, items=150, interactions=16_000, days=8, seed=3)
    write_dataset(engine, synthetic_dataset(spec, end=datetime(2026, 11, 10)))
    if outage:
        start = datetime.combine(outage, datetime.min.time())
        occurred = schema.interactions.c.occurred_at
        with engine.begin() as conn:
            conn.execute(schema.interactions.delete().where(occurred >= start, occurred < start + timedelta(days=1)))
    root = (base / "storage").as_uri()
    settings = load_settings({"storage_root": root})
    for day in days:
        publish_partition(stage_partition(engine, Interval.for_day(day), settings), settings, QualityPolicy())
    engine.dispose()
    return root
