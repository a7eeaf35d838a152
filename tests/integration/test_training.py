"""Training, export and gate on real (tiny) extracted partitions, with real TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.training.data import NotEnoughDataError, load_window
from recsys.training.fit import TrainParams, fit
from recsys.training.gate import GatePolicy, read_champion, run_gate
from recsys.training.pipeline import train_and_export

END = date(2026, 11, 9)
FAST = TrainParams(epochs=2, batch_size=512)


@pytest.fixture
def trained(trained_model):
    return trained_model


def local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def test_window_reports_outages(synthetic_lake):
    window = load_window(synthetic_lake + "/extract", END, 10)
    assert window.outage_days == ["2026-11-05"]
    assert window.missing_days == ["2026-10-31", "2026-11-01"]
    assert len(window.days) == 7 and len(window.interactions) > 10_000


def test_training_beats_popularity_and_exports_everything(trained):
    model_dir, result = trained
    files = {p.name for p in local(model_dir).iterdir()}
    assert {
        "query_model",
        "index_brute_force",
        "candidates.parquet",
        "items.parquet",
        "users.parquet",
        "holdout.parquet",
        "metadata.json",
        "vocabularies.json",
        "index.json",
        "metrics.json",
    } <= files
    vocab = json.loads((local(model_dir) / "vocabularies.json").read_text())
    known_users = set(pd.read_parquet(local(model_dir) / "users.parquet")["user_id"])
    assert vocab["user_ids"] == sorted(vocab["user_ids"]) and set(vocab["user_ids"]) <= known_users
    assert len(vocab["user_ids"]) > 250 and "Drama" in vocab["genres"]  # ids seen in training
    model, popularity = result["metrics"]["model"], result["metrics"]["popularity"]
    assert model["top_10_accuracy"] > popularity["top_10_accuracy"] + 0.05  # taste clusters were learned
    assert result["window"]["outage_days"] == ["2026-11-05"] and result["window"]["holdout_rows"] > 0
    index = result["index"]
    assert index["grid"][0]["recall@10"] == 1.0 and (local(model_dir) / "index_scann").is_dir()  # pinned config
    native = local(model_dir) / "index_scann_native"
    assert (native / "scann_assets.pbtxt").is_file() and "/" not in (native / "scann_assets.pbtxt").read_text()
    assert (
        json.loads((native / "item_ids.json").read_text())
        == pd.read_parquet(local(model_dir) / "candidates.parquet")["item_id"].tolist()
    )
    candidates = pd.read_parquet(local(model_dir) / "candidates.parquet")
    assert len(candidates) == 150 and len(candidates["embedding"][0]) == FAST.embedding_dim


def test_training_is_deterministic(synthetic_lake, trained, tmp_path):
    _, first = trained
    again = train_and_export(
        synthetic_lake + "/extract", END, 8, 1, tmp_path.as_uri() + "/v2", FAST, min_interactions=500
    )
    assert again["loss_per_epoch"] == first["loss_per_epoch"]
    assert again["metrics"]["model"] == first["metrics"]["model"]


FRESH_PROCESS = """
import json, sys
import scann  # registers the ScaNN ops before any SavedModel is loaded
import tensorflow as tf
out = {}
for name in sys.argv[2:]:
    serve = tf.saved_model.load(sys.argv[1] + "/" + name).signatures["serving_default"]
    users = json.loads(sys.stdin.readline()) if not out else users
    result = serve(**{k: tf.constant(v) for k, v in users.items()})
    out[name] = [[i.decode() for i in row[:10]] for row in result["item_ids"].numpy().tolist()]
print(json.dumps(out))
"""


def test_exports_reload_in_a_fresh_process_with_the_same_top_k(trained, tmp_path):
    """Brute force and an exhaustive ScaNN export, loaded after ``import scann``, agree with numpy."""
    import tensorflow as tf

    from recsys.training.export import ScannConfig, build_scann, save_retrieval_model
    from recsys.training.features import query_features

    model_dir, _ = trained
    path = local(model_dir)
    candidates = pd.read_parquet(path / "candidates.parquet")
    item_ids = candidates["item_id"].tolist()
    embeddings = np.stack(candidates["embedding"].to_numpy()).astype(np.float32)
    users = pd.read_parquet(path / "users.parquet")
    history = pd.read_parquet(path / "history.parquet").groupby("user_id")["item_id"].agg(list)
    sample = users["user_id"].head(20)
    features = query_features(sample, [history.get(u, []) for u in sample], users, FAST.history_length)
    loaded = tf.saved_model.load(str(path / "query_model"))
    assert not hasattr(loaded, "keras_api")  # the signature only: no Keras traces of every sub-layer
    query_model = loaded.signatures["serving_default"]
    queries = query_model(**{k: tf.constant(v) for k, v in features.items()})["embedding"].numpy()
    expected = [[item_ids[i] for i in np.argsort(-(q @ embeddings.T), kind="stable")[:10]] for q in queries]

    # An exhaustive ScaNN configuration (every leaf searched, every candidate re-ranked) must be exact.
    # Training is deterministic, so re-fitting gives the exported tower again.
    window = load_window(trained[1]["window"]["extract_root"], END, 8)
    holdout_start = pd.Timestamp("2026-11-09", tz="UTC").timestamp()
    fitted = fit(
        window.interactions[window.interactions["timestamp"] < holdout_start], window.users, window.items, FAST
    )
    assert np.allclose(fitted.candidate_embeddings(item_ids, window.items), embeddings, atol=1e-5)
    scann = build_scann(fitted.model.query_tower, item_ids, embeddings, 100, ScannConfig(4, 4, 150))
    save_retrieval_model(scann, path / "exhaustive_scann", True, FAST.history_length, scann=True)

    payload = json.dumps({k: np.asarray(v).tolist() for k, v in features.items()}) + "\n"
    out = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(path), "index_brute_force", "exhaustive_scann"],
        input=payload,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["index_brute_force"] == expected
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found["exhaustive_scann"], expected, strict=True)])
    assert overlap == 1.0


def test_gate_blesses_first_then_protects_the_champion(synthetic_lake, trained, tmp_path):
    model_dir, _ = trained
    models_root = tmp_path.as_uri() + "/models"
    # the synthetic users repeat items: a policy that recommends seen items scores far higher on this holdout
    repeats_dir = tmp_path.as_uri() + "/repeats"
    repeats = TrainParams(epochs=1, batch_size=512, exclude_seen=False)
    train_and_export(synthetic_lake + "/extract", END, 8, 1, repeats_dir, repeats, min_interactions=500)
    first = run_gate(repeats_dir, models_root, "v1", GatePolicy())
    assert first["blessed"] and first["reasons"][-1] == "no champion yet" and first["runs_without_new_champion"] == 0
    assert read_champion(models_root)["version"] == "v1"
    card = (local(repeats_dir) / "model_card.md").read_text()
    assert "BLESSED" in card and "Outage days (no data) in the window: 2026-11-05" in card
    assert "## Served policy" in card
    assert (local(repeats_dir) / "training_plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rejected = run_gate(model_dir, models_root, "v2", GatePolicy(tolerance=0.01))
    assert not rejected["blessed"] and read_champion(models_root)["version"] == "v1"
    assert "worse than the champion" in rejected["reasons"][-1] and rejected["runs_without_new_champion"] == 1
    assert rejected["champion_metrics"] == first["model"]  # the champion scored on the same rows
    forced = run_gate(model_dir, models_root, "v2", GatePolicy(force=True))
    assert forced["blessed"] and read_champion(models_root)["previous"] == "v1"
    assert forced["runs_without_new_champion"] == 0


def test_when_the_holdout_is_sampled_the_gate_scores_the_champion_on_the_same_rows(synthetic_lake, trained, tmp_path):
    model_dir, result = trained
    models_root = tmp_path.as_uri() + "/models"
    assert run_gate(model_dir, models_root, "v1", GatePolicy())["blessed"]
    sampled_dir = tmp_path.as_uri() + "/sampled"
    sampled = train_and_export(synthetic_lake + "/extract", END, 8, 1, sampled_dir, FAST, min_interactions=500,
                               max_eval_cells=150 * 400)  # fmt: skip
    rows = sampled["window"]["evaluated_rows"]
    assert rows == 400 < sampled["window"]["holdout_rows"] == result["window"]["holdout_rows"]
    evaluated = pd.read_parquet(local(sampled_dir) / "evaluated.parquet")
    assert len(evaluated) == rows and sampled["metrics"][sampled["served"]["policy"]]["pairs"] == rows
    decision = run_gate(sampled_dir, models_root, "v2", GatePolicy())
    assert decision["champion_metrics"]["pairs"] == rows == decision["model"]["pairs"]
    # the champion's score on those rows, not on the whole holdout it was gated on
    assert decision["champion_metrics"] != result["metrics"][result["served"]["policy"]]


def test_a_baseline_that_wins_on_validation_is_exported_and_served(synthetic_lake, tmp_path, monkeypatch):
    """A barely trained two-tower and a two-stage policy with a one-item pool lose on validation: the best
    baseline is served, from the export, with the same answers as the offline policy, and the gate's task
    alerts through the configured webhook."""
    from fakes.receiver import Receiver

    from recsys.config import DagSettings, Settings, StorageSettings
    from recsys.policy import ItemItemPolicy, load_policy
    from recsys.serving.predictor import Predictor
    from recsys.serving.request import Instance, PredictRequest
    from recsys.steps import two_tower
    from recsys.training.rank import RankingConfig
    from recsys_devtools.emulators.ports import free_port
    from recsys_devtools.emulators.running import RunningFake

    weak_dir = tmp_path.as_uri() + "/weak"
    weak = TrainParams(epochs=1, batch_size=512, learning_rate=0.0005, use_features=False)
    result = train_and_export(synthetic_lake + "/extract", END, 8, 1, weak_dir, weak, min_interactions=500,
                              ranking=RankingConfig(candidates_per_retriever=1))  # fmt: skip
    metrics, validation = result["metrics"], result["served"]["validation"]
    assert {"popularity", "first_event_prior", "item_knn", "rp3beta", "ease", "two_stage", "model"} <= set(metrics)
    served = result["served"]["policy"]
    assert served in ("item_knn", "rp3beta", "ease") and validation[served] == max(validation.values())
    assert validation[served] > max(validation["model"], validation["two_stage"])
    # every baseline's parameters were chosen on validation, before the holdout was read
    for name in ("item_knn", "rp3beta", "ease"):
        chosen = result["baselines"][name]
        assert chosen["tried"] and chosen["validation"] == max(t["validation"] for t in chosen["tried"])
    assert (
        result["window"]["validation_rows"] > 0
        and result["window"]["fit_rows"] + result["window"]["validation_rows"] == result["window"]["train_rows"]
    )
    policy = load_policy(local(weak_dir))
    assert isinstance(policy, ItemItemPolicy)
    predictor = Predictor(local(weak_dir))
    history = pd.read_parquet(local(weak_dir) / "history.parquet")
    user = history["user_id"].iloc[0]
    online = predictor.predict(PredictRequest([Instance(user)], k=10))[0]
    offline = policy.recommend(policy.batch_from_histories([user], [predictor.history_of(Instance(user))], {}), 10)[0]
    assert online["item_ids"] == offline["item_ids"] and len(online["item_ids"]) == 10
    receiver = Receiver()
    with RunningFake(receiver, free_port()) as running:
        monkeypatch.setenv("AIRFLOW_CONN_ALERT_HOOK", json.dumps({"conn_type": "http", "host": running.url}))
        alerting = DagSettings(alert_webhook_conn_id="alert_hook", alert_webhook_endpoint="hooks/recsys")
        settings = Settings(storage=StorageSettings(root=tmp_path.as_uri()))
        planned = two_tower.TrainingPlan(END.isoformat(), "weak", "local", weak_dir)
        params = {"tolerance": 0.01, "force": False, "gate_baseline": "best"}
        decision = two_tower.gate(settings, planned, params, dag_settings=alerting)
    assert decision["blessed"] and decision["served"] == served and decision["served_is_baseline"]
    assert read_champion(settings.storage.models_root)["served"] == served
    assert [a["event"] for a in decision["alerts"]] == ["baseline_served"]
    assert decision["alerts"][0]["channels"] == ["webhook"]
    (post,) = receiver.posts
    assert post["event"] == "baseline_served" and post["served"] == served and served in post["text"]
    card = (local(weak_dir) / "model_card.md").read_text()
    assert f"serving {served}" in card and "**A baseline is served**" in card and "| ease |" in card


def test_the_two_stage_policy_is_served_the_same_online_as_offline(synthetic_lake, trained, tmp_path):
    """Whatever validation chose, an export that serves the two-stage policy answers with it: the server's
    answer equals the offline policy's for the same query, and recent events change it."""
    import json
    import shutil

    from recsys.policy import TwoStagePolicy, load_policy
    from recsys.serving.predictor import Predictor
    from recsys.serving.request import Instance, PredictRequest

    model_dir, result = trained
    assert result["ranking"]["final"]["pairs"] > 0 and 0 < result["ranking"]["final"]["holdout_pool_recall"] <= 1
    assert "two_stage" in result["served"]["validation"] and "two_stage" in result["metrics"]
    if result["served"]["policy"] == "two_stage":
        export = local(model_dir)
    else:  # serve the two-stage policy from a copy of the export: the same files a two-stage win writes
        from recsys.policy import save_policy
        from recsys.training import rank
        from recsys.training.data import load_window

        export = tmp_path / "copy"
        shutil.copytree(local(model_dir), export)
        window = load_window(result["window"]["extract_root"], END, 8)
        train = window.interactions[window.interactions["timestamp"] < pd.Timestamp("2026-11-09", tz="UTC").timestamp()]
        catalog = pd.read_parquet(export / "candidates.parquet")["item_id"].astype(str).tolist()
        spec = rank.Retrievers({"item_knn": {"shrink": 0.0, "decay": 0.8}}, 1, 30)
        choice = rank.RankerChoice({"num_leaves": 7, "min_data_in_leaf": 5, "learning_rate": 0.1}, 10, 0.0)
        config = TrainParams(**result["params"]).policy_config()
        two_stage, _ = rank.fit(train, catalog, config, spec, rank.RankingConfig(candidates_per_retriever=30), choice)
        metadata = json.loads((export / "metadata.json").read_text())
        metadata["served"] = {"policy": "two_stage", "described": save_policy(two_stage, export / "served")}
        (export / "metadata.json").write_text(json.dumps(metadata))
    policy = load_policy(export)
    assert isinstance(policy, TwoStagePolicy) and policy.ranker is not None
    now = 1_800_000_000.0
    predictor = Predictor(export, clock=lambda: now)
    user = pd.read_parquet(export / "history.parquet")["user_id"].iloc[0]
    instance = Instance(user)
    online = predictor.predict(PredictRequest([instance], k=10))[0]
    since_last = [predictor.since_last_of(instance, now)]
    batch = policy.batch_from_histories([user], [predictor.history_of(instance)], {}, since_last=since_last)
    offline = policy.recommend(batch, 10)[0]
    assert online["item_ids"] == offline["item_ids"] and len(online["item_ids"]) == 10
    recent = Instance(user, recent_item_ids=offline["item_ids"][:3])
    assert predictor.predict(PredictRequest([recent], k=10))[0]["item_ids"] != online["item_ids"]


def test_too_little_data_is_a_clear_error(synthetic_lake, tmp_path):
    with pytest.raises(NotEnoughDataError, match="only 0 training interactions"):
        train_and_export(synthetic_lake + "/extract", date(2026, 10, 20), 5, 1, tmp_path.as_uri(), FAST)
    with pytest.raises(NotEnoughDataError, match="no interactions in the 1 holdout"):
        train_and_export(
            synthetic_lake + "/extract", date(2026, 11, 5), 4, 1, tmp_path.as_uri(), FAST, min_interactions=500
        )


def test_cli_honours_vertex_environment(synthetic_lake, tmp_path):
    env = {
        **os.environ,
        "AIP_MODEL_DIR": (tmp_path / "model").as_uri(),
        "AIP_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "AIP_TENSORBOARD_LOG_DIR": str(tmp_path / "tb"),
    }
    args = [
        sys.executable,
        "-m",
        "recsys.training.train",
        "--extract-root",
        synthetic_lake + "/extract",
        "--end-day",
        "2026-11-09",
        "--window-days",
        "8",
        "--epochs",
        "2",
        "--batch-size",
        "512",
        "--min-interactions",
        "500",
        "--baseline-budget-minutes",
        "0",
    ]
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["model_dir"] == env["AIP_MODEL_DIR"]
    baselines = json.loads((tmp_path / "model" / "metrics.json").read_text())["baselines"]
    # a zero budget for choosing the baselines: each tries its first configuration only, the rest are untried
    assert all(len(b["tried"]) == 1 for b in baselines.values() if not b.get("skipped")), baselines
    assert sum(b.get("untried", 0) for b in baselines.values()) > 0, baselines
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "epoch-001.weights.h5",
        "epoch-002.weights.h5",
    ]
    assert any((tmp_path / "tb").rglob("*tfevents*"))
    bad = subprocess.run([*args, "--window-days", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "holdout_days (1) must be smaller than window_days (1)" in bad.stderr
