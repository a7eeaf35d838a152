"""Tuning inside a training run (Optuna on the validation split) and the attention query tower, served."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from fakes.serving_process import Server

from recsys.training.tuning import TUNED


def local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def test_tuning_chooses_on_validation_and_reports_every_trial(tuned_attention_model):
    model_dir, result = tuned_attention_model
    tuning = result["tuning"]
    trials = tuning["trials"]
    assert 1 <= len(trials) <= 3 and trials[0]["params"]["query_tower"] == "attention"  # the given values first
    assert trials[0]["params"]["learning_rate_adagrad"] == 0.05
    complete = [t for t in trials if t["state"] == "complete"]
    best = max(complete, key=lambda t: t["value"])
    assert tuning["best_trial"] == best["number"] and tuning["validation"] == best["value"]
    for trial in trials:  # epochs are chosen by the validation curve, never beyond max_epochs
        assert 1 <= len(trial["validation_per_epoch"]) <= 3
        assert trial["value"] == max(trial["validation_per_epoch"])
    chosen = tuning["chosen"]
    assert set(chosen) == set(TUNED) and chosen["epochs"] == best["best_epoch"]
    assert chosen["no_history"] == max(best["no_history"], key=best["no_history"].get)
    # the final model was fitted with the chosen values, on the whole train part
    assert {k: result["params"][k] for k in TUNED} == chosen
    assert len(result["loss_per_epoch"]) == chosen["epochs"]
    card = (local(model_dir) / "model_card.md").read_text() if (local(model_dir) / "model_card.md").exists() else ""
    metadata = json.loads((local(model_dir) / "metadata.json").read_text())
    assert metadata["policy"]["no_history"] == chosen["no_history"] and metadata["prior_items"]
    assert card == ""  # the card is the gate's: written when the gate runs


def test_the_model_card_shows_trials_baselines_and_the_validation_plot(tuned_attention_model, tmp_path):
    from recsys.training.gate import GatePolicy, run_gate

    model_dir, result = tuned_attention_model
    decision = run_gate(model_dir, tmp_path.as_uri(), "tuned", GatePolicy())
    card = (local(model_dir) / "model_card.md").read_text()
    assert f"Model tuning: {len(result['tuning']['trials'])} trials" in card
    assert "| trial | state | validation | best epoch |" in card and "| rp3beta |" in card
    assert f"The gate's bar: **{decision['baseline']}**" in card
    assert (local(model_dir) / "training_plot.png").stat().st_size > 10_000


def test_the_attention_tower_serves_recent_events_in_the_same_request(tmp_path, synthetic_lake):
    """An attention export through the real server: request events change the answer at once."""
    from datetime import date

    from recsys.training.fit import TrainParams
    from recsys.training.pipeline import train_and_export

    model_dir = tmp_path.as_uri() + "/attention"
    params = TrainParams(epochs=2, batch_size=512, query_tower="attention", history_length=20)
    # serve="model": the attention tower itself, whatever validation would serve
    train_and_export(
        synthetic_lake + "/extract", date(2026, 11, 9), 8, 1, model_dir, params, min_interactions=500, serve="model"
    )
    assert json.loads((local(model_dir) / "metrics.json").read_text())["params"]["query_tower"] == "attention"
    items = pd.read_parquet(local(model_dir) / "items.parquet")
    horror = items[items["genres"].str.startswith("Horror")]["item_id"].head(2).tolist()
    (tmp_path / "serving").mkdir()
    server = Server(model_dir, "brute_force", tmp_path / "serving")
    try:

        def top(instance) -> list[str]:
            body = {"instances": [instance], "parameters": {"k": 10}}
            return server.predict(body).json()["predictions"][0]["item_ids"]

        for user in ("u1", "brand-new-user"):
            before = top(user)
            after = top({"user_id": user, "recent_item_ids": horror})
            assert after != before and not set(horror) & set(after)

        # the order of the events matters to attention (positions): the scores differ, not only the items
        def scores(recent: list[str]) -> list[float]:
            body = {"instances": [{"user_id": "brand-new-user", "recent_item_ids": recent}], "parameters": {"k": 10}}
            return server.predict(body).json()["predictions"][0]["scores"]

        assert scores(horror) != scores(horror[::-1])
    finally:
        server.stop()
