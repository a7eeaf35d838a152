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
    # this test is about the champion: the bar is popularity (the baselines' bar has its own test)
    popularity_bar = GatePolicy(baseline="popularity")
    first = run_gate(model_dir, models_root, "v1", popularity_bar)
    assert first["blessed"] and first["reasons"][-1] == "no champion yet"
    assert read_champion(models_root)["version"] == "v1"
    card = (local(model_dir) / "model_card.md").read_text()
    assert "BLESSED" in card and "Outage days (no data) in the window: 2026-11-05" in card
    assert (local(model_dir) / "training_plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    weak_dir = tmp_path.as_uri() + "/weak"
    weak = TrainParams(epochs=1, batch_size=512, learning_rate=0.0005, use_features=False)
    train_and_export(synthetic_lake + "/extract", END, 8, 1, weak_dir, weak, min_interactions=500)
    rejected = run_gate(weak_dir, models_root, "weak", GatePolicy(tolerance=0.01, baseline="popularity"))
    assert not rejected["blessed"] and read_champion(models_root)["version"] == "v1"
    assert rejected["champion_metrics"] == first["model"]  # the champion scored on the same holdout
    forced = run_gate(weak_dir, models_root, "weak", GatePolicy(force=True))
    assert forced["blessed"] and read_champion(models_root)["previous"] == "v1"


def test_gate_refuses_a_candidate_that_a_baseline_beats_and_says_which(synthetic_lake, tmp_path):
    weak_dir = tmp_path.as_uri() + "/weak"
    weak = TrainParams(epochs=1, batch_size=512, learning_rate=0.0005, use_features=False)
    result = train_and_export(synthetic_lake + "/extract", END, 8, 1, weak_dir, weak, min_interactions=500)
    metrics = result["metrics"]
    assert {"popularity", "first_event_prior", "item_knn", "rp3beta", "ease"} <= set(metrics)
    best = max(("item_knn", "rp3beta", "ease"), key=lambda name: metrics[name]["top_100_accuracy"])
    assert metrics[best]["top_100_accuracy"] > metrics["model"]["top_100_accuracy"]  # barely trained
    decision = run_gate(weak_dir, tmp_path.as_uri() + "/models", "weak", GatePolicy())
    assert not decision["blessed"] and decision["baseline"] == best
    assert f"does not beat the best baseline ({best})" in decision["reasons"][0]
    assert read_champion(tmp_path.as_uri() + "/models") is None
    card = (local(weak_dir) / "model_card.md").read_text()
    assert "NOT BLESSED" in card and "| item_knn |" in card and "| ease |" in card
    # every baseline's parameters were chosen on validation, before the holdout was read
    for name in ("item_knn", "rp3beta", "ease"):
        chosen = result["baselines"][name]
        assert chosen["tried"] and chosen["validation"] == max(t["validation"] for t in chosen["tried"])
    assert (
        result["window"]["validation_rows"] > 0
        and result["window"]["fit_rows"] + result["window"]["validation_rows"] == result["window"]["train_rows"]
    )


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
