"""The validation split: where every choice of a training run is made (never on the holdout).

The training part of the window splits in time order: the newest ``fraction`` of its rows (cut at a
timestamp, so events of one second stay together) is the validation set, the rest is what candidates
are fitted on while choosing. A validation query is scored exactly as a holdout query is
(:mod:`recsys.training.evaluate`): its history is the user's earlier events, seen items excluded.

The objective is the mean of the top-10 and top-100 hit rates (``OBJECTIVE``): both ends of the
list a recommender serves count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recsys.policy import Policy
from recsys.training.data import split_at
from recsys.training.evaluate import metrics_from_ranks

OBJECTIVE = "mean of the top-10 and top-100 hit rates on the validation split"
OBJECTIVE_KS = (10, 100)
MAX_CELLS = 200_000_000  # validation rows x catalog items scored per policy (a seeded row sample beyond)


def validation_split(train: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(fit, validation)``: validation = the rows at or after the timestamp that leaves ``fraction``
    of ``train`` newest; empty when ``train`` is too short to split."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {fraction}")
    stamps = np.sort(train["timestamp"].to_numpy())
    if len(stamps) < 2:
        return train, train.iloc[0:0]
    return split_at(train, stamps[min(len(stamps) - 1, int(len(stamps) * (1 - fraction)))])


@dataclass
class Validation:
    """Scores policies on the validation rows (a seeded sample when rows x catalog passes MAX_CELLS)."""

    rows: pd.DataFrame
    log: pd.DataFrame  # the fit part + the validation rows: histories come from here
    features: dict
    _batches: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, fit: pd.DataFrame, validation: pd.DataFrame, users: pd.DataFrame, catalog_size: int) -> Validation:
        from recsys.training.features import demographics

        most = max(1, MAX_CELLS // max(catalog_size, 1))
        rows = validation if len(validation) <= most else validation.sample(most, random_state=0).sort_index()
        rows = rows.reset_index(drop=True)
        columns = ["user_id", "item_id", "timestamp"]
        log = pd.concat([fit[columns], validation[columns]], ignore_index=True)
        return cls(rows, log, demographics(rows["user_id"].to_numpy(), users))

    def batch(self, policy: Policy):
        """The validation queries as ``policy`` reads them (one batch per history length and exclusion rule)."""
        key = (policy.config.history_length, policy.config.exclude_seen, tuple(policy.catalog[:1]), len(policy.catalog))
        if key not in self._batches:
            self._batches[key] = policy.batch_from_log(self.rows, self.log, self.features)
        return self._batches[key]

    def metrics(self, policy: Policy) -> dict:
        """Hit rates and recall of ``policy`` on the validation rows, plus ``objective``."""
        batch = self.batch(policy)
        ranks = policy.ranks(batch, self.rows["item_id"].astype(str).to_numpy())
        out = metrics_from_ranks(ranks, batch.user_ids, ks=(1, *OBJECTIVE_KS))
        out["objective"] = round(float(np.mean([out[f"top_{k}_accuracy"] for k in OBJECTIVE_KS])), 5)
        return out

    def score(self, policy: Policy) -> float:
        return self.metrics(policy)["objective"]

    def __len__(self) -> int:
        return len(self.rows)
