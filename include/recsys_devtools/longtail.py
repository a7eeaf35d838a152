"""A second, differently shaped data set for the quality benchmark: a long-tail catalog with drifting popularity.

Not MovieLens in any way that matters to the choice of a policy:

* 50,000 items (EASE's dense inverse is out of reach; the item-item models use sparse neighbour lists);
  each item is launched on a day of the window (or before it) and its appeal fades with a 10-day half-life,
  so what is popular moves every day; base appeal is Zipf-distributed (a long tail).
* Items come in series of five (episodes, volumes): a user often goes on to the next one of the series
  just taken — an item-item signal. Each series has one of 40 topics; each user prefers one topic.
* 20,000 users arrive over the window, with log-normal activity; no demographics.

Deterministic for a seed. ``frames()`` gives ``(interactions, users, items)`` as the benchmark loads them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SERIES = 5
TOPICS = 40
HALF_LIFE_DAYS = 10.0


def frames(
    users: int = 20_000, items: int = 50_000, days: int = 60, mean_events: float = 15.0, seed: int = 7
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    series_topic = rng.integers(0, TOPICS, items // SERIES + 1)
    topic = series_topic[np.arange(items) // SERIES]
    launch = rng.uniform(-20, days, items // SERIES + 1)[np.arange(items) // SERIES] + np.arange(items) % SERIES
    appeal = 1.0 / (rng.permutation(items) + 10.0) ** 1.05

    def weights(day: float) -> np.ndarray:
        age = day - launch
        return np.where(age >= 0, appeal * 0.5 ** (np.maximum(age, 0) / HALF_LIFE_DAYS), 0.0)

    by_day = [weights(day + 0.5) for day in range(days)]
    global_cdf = [np.cumsum(w) / w.sum() for w in by_day]
    members = [np.flatnonzero(topic == t) for t in range(TOPICS)]
    topic_cdf = [[np.cumsum(w[m]) / max(w[m].sum(), 1e-12) for m in members] for w in by_day]

    user_topic = rng.integers(0, TOPICS, users)
    counts = np.clip(np.round(rng.lognormal(np.log(mean_events) - 0.5, 1.0, users)), 1, 300).astype(int)
    start = rng.uniform(0, days, users) * 86_400
    rows_user, rows_item, rows_time = [], [], []
    clock = start.copy()
    previous = np.full(users, -1)
    for step in range(int(counts.max())):
        active = np.flatnonzero((counts > step) & (clock < days * 86_400))
        if not len(active):
            break
        day = (clock[active] // 86_400).astype(int)
        draw = rng.random(len(active))
        chosen = np.empty(len(active), dtype=np.int64)
        for row, user in enumerate(active):
            last = previous[user]
            if last >= 0 and draw[row] < 0.35 and (last + 1) % SERIES and by_day[day[row]][last + 1] > 0:
                chosen[row] = last + 1  # the next of the series
            elif draw[row] < 0.75:
                cdf = topic_cdf[day[row]][user_topic[user]]
                chosen[row] = members[user_topic[user]][min(np.searchsorted(cdf, rng.random()), len(cdf) - 1)]
            else:
                cdf = global_cdf[day[row]]
                chosen[row] = min(np.searchsorted(cdf, rng.random()), items - 1)
        rows_user.append(active)
        rows_item.append(chosen)
        rows_time.append(clock[active].astype(np.int64))
        previous[active] = chosen
        clock[active] += rng.exponential(6 * 3600, len(active))
    interactions = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in np.concatenate(rows_user)],
            "item_id": [f"i{i}" for i in np.concatenate(rows_item)],
            "timestamp": 1_767_225_600 + np.concatenate(rows_time),
        }
    )
    interactions = interactions.drop_duplicates(["user_id", "item_id"]).sort_values("timestamp", kind="stable")
    users_frame = pd.DataFrame({"user_id": [f"u{u}" for u in range(users)]})
    items_frame = pd.DataFrame(
        {"item_id": [f"i{i}" for i in range(items)], "title": [f"item {i}" for i in range(items)]}
    )
    return interactions.reset_index(drop=True), users_frame, items_frame
