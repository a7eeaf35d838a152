"""The native ScaNN index: exact for an exhaustive configuration, the same after a save/load round trip
in another folder, and tuned to exact search or ScaNN by what it measures."""

import shutil

import numpy as np
import scann  # noqa: F401 - a hard requirement: a broken install fails here rather than skipping

from recsys import index


def clustered(n: int, dims: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(40, dims))
    items = centers[rng.integers(0, 40, n)] + 0.3 * rng.normal(size=(n, dims))
    queries = centers[rng.integers(0, 40, 64)] + 0.3 * rng.normal(size=(64, dims))
    return items.astype(np.float32), queries.astype(np.float32)


def test_exhaustive_configuration_equals_exact_search():
    items, queries = clustered(3000)
    exhaustive = index.ScannConfig(num_leaves=8, num_leaves_to_search=8, num_reordering_candidates=3000)
    columns, scores = index.native_search(index.build(items, exhaustive), exhaustive)(queries, 50)
    exact_columns, exact_scores = index.exact_search(items)(queries, 50)
    np.testing.assert_array_equal(columns, exact_columns)
    np.testing.assert_allclose(scores, exact_scores, rtol=1e-5)


def test_exact_search_breaks_ties_by_column_and_chunks_rows():
    items = np.array([[1.0], [2.0], [2.0], [0.5]], dtype=np.float32)
    columns, scores = index.exact_search(items, cells=4)(np.array([[1.0], [-1.0]], dtype=np.float32), 3)
    assert columns.tolist() == [[1, 2, 0], [3, 0, 1]]
    assert scores.tolist() == [[2.0, 2.0, 1.0], [-0.5, -1.0, -2.0]]


def test_saved_searcher_answers_the_same_from_another_folder(tmp_path):
    items, queries = clustered(2000)
    config = index.ScannConfig(num_leaves=20, num_leaves_to_search=5, num_reordering_candidates=200)
    searcher = index.build(items, config)
    ids = [f"item-{i}" for i in range(len(items))]
    index.save(searcher, tmp_path / "a", ids)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the model folder moves between machines
    shutil.rmtree(tmp_path / "a")
    loaded, loaded_ids = index.load(tmp_path / "b")
    assert loaded_ids == ids
    before = index.native_search(searcher, config)(queries, 10)
    after = index.native_search(loaded, config)(queries, 10)
    np.testing.assert_array_equal(before[0], after[0])


def test_tune_picks_a_qualified_configuration_and_reports_the_baseline():
    items, queries = clustered(20_000, dims=32)
    grid = [index.ScannConfig(100, 2, 100), index.ScannConfig(100, 30, 1000)]
    searcher, report = index.tune(items, queries, k=10, target_recall=0.95, min_recall=0.5, grid=grid)
    assert [row["num_leaves_to_search"] for row in report["grid"]] == [2, 30]
    assert report["grid"][0]["build_s"] == report["grid"][1]["build_s"]  # one tree, two query-time settings
    assert report["scann"]["recall@10"] >= 0.95 and report["scann"]["num_leaves_to_search"] == 30
    # chosen on half the queries, measured again on the other half
    assert report["queries"] == report["held_out_queries"] == 32
    assert report["scann"]["held_out"]["recall@10"] >= 0.9
    assert searcher is not None and report["serving"] in {"scann", "brute_force"}
    assert report["brute_force_latency_ms"]["p50"] > 0


def test_tune_refuses_scann_below_the_minimum_recall():
    items, queries = clustered(5000)
    searcher, report = index.tune(
        items, queries, k=10, min_recall=0.999, target_recall=0.999, grid=[index.ScannConfig(50, 1, 10)]
    )
    assert searcher is None and report["serving"] == "brute_force" and "scann" not in report
    assert report["reason"].startswith("best ScaNN recall@10 on held-out queries")
    assert report["best_scann"]["held_out"]["recall@10"] < 0.999
