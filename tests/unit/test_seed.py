"""The synthetic generator, the MovieLens loaders and the seed command (real SQLite files)."""

from __future__ import annotations

import os
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from recsys.data import schema
from recsys_devtools.movielens import ML100K_GENRES, MovieLensFormatError, detect_and_load
from recsys_devtools.seed import main as seed_main
from recsys_devtools.synthetic import GENRES, SyntheticSpec, synthetic_dataset

END = datetime(2026, 11, 23)
ML100K = Path(os.environ.get("MOVIELENS_100K_DIR",
                           Path(__file__).resolve().parents[3] / "shared" / "datasets" / "movielens-100k"))  # fmt: skip


def rows(dataset):
    return [r for chunk in dataset.interaction_chunks() for r in chunk]


def test_synthetic_is_deterministic_and_structured():
    spec = SyntheticSpec(users=300, items=200, interactions=20_000, days=10, seed=7, chunk_rows=3_000)
    a, b = synthetic_dataset(spec, END), synthetic_dataset(spec, END)
    ra, rb = rows(a), rows(b)
    assert ra == rb and a.items == b.items and a.users == b.users
    assert rows(synthetic_dataset(SyntheticSpec(**{**vars(spec), "seed": 8}), END)) != ra
    assert len(ra) == 20_000
    assert all(END - timedelta(days=10) <= r["occurred_at"] < END for r in ra)

    popularity = Counter(r["item_id"] for r in ra).most_common()
    top_decile = sum(c for _, c in popularity[: len(popularity) // 10])
    assert top_decile / len(ra) > 0.35  # power law: the top 10% of items get a large share

    genre_of = {i["item_id"]: i["genres"].split("|")[0] for i in a.items}
    by_user = {}
    for r in ra:
        by_user.setdefault(r["user_id"], Counter())[genre_of[r["item_id"]]] += 1
    active = [c for c in by_user.values() if sum(c.values()) >= 30]
    favourite_share = sum(c.most_common(1)[0][1] / sum(c.values()) for c in active) / len(active)
    assert favourite_share > 0.6  # taste clusters: users concentrate on one genre (uniform would be 1/12)
    assert {g for i in a.items for g in i["genres"].split("|")} <= set(GENRES)


def test_synthetic_malformed_fraction():
    spec = SyntheticSpec(users=50, items=40, interactions=5_000, malformed_fraction=0.1)
    data = rows(synthetic_dataset(spec, END))
    bad = [r for r in data if r["user_id"] is None or r["event_type"] == "unknown_event" or r["event_value"] != 1.0]
    assert 350 < len(bad) < 650
    with pytest.raises(ValueError, match="malformed_fraction"):
        SyntheticSpec(malformed_fraction=2)


def write_ml100k(directory: Path, data_lines: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "u.data").write_text("\n".join(data_lines) + "\n")
    flags = ["0"] * len(ML100K_GENRES)
    flags[1] = flags[5] = "1"
    item = "|".join(["1", "Toy Story (1995)", "01-Jan-1995", "", "http://x"] + flags)
    item2 = "|".join(["2", "Café Été (1996)", "01-Jan-1996", "", "http://x"] + ["0"] * len(ML100K_GENRES))
    (directory / "u.item").write_bytes((item + "\n" + item2 + "\n").encode("latin-1"))
    (directory / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    return directory


def test_ml100k_format(tmp_path):
    data = detect_and_load(write_ml100k(tmp_path, ["1\t1\t5\t874965758", "2\t2\t3\t876893171"]))
    assert data.items[0] == {"item_id": "1", "title": "Toy Story (1995)", "genres": "Action|Comedy",
                             "release_year": 1995}  # fmt: skip
    assert data.items[1]["title"] == "Café Été (1996)"  # latin-1 decoded
    assert data.users[1] == {"user_id": "2", "age": 53, "gender": "F", "occupation": "other"}
    first = rows(data)[0]
    assert (first["event_type"], first["event_value"], first["occurred_at"]) == (
        "rating", 5.0, datetime(1997, 9, 22, 22, 2, 38))  # fmt: skip


@pytest.mark.skipif(not ML100K.exists(), reason="MovieLens 100K is not available on this machine")
def test_real_ml100k_files(caplog):
    data = detect_and_load(ML100K)
    # This copy's u.item lacks item 267, which u.data references: the ratings are kept, with a warning.
    assert (len(rows(data)), len(data.users), len(data.items)) == (100_000, 943, 1681)
    assert "reference 1 item id(s) without metadata: ['267']" in caplog.text


def test_ml_latest_small_format(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n")
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n3,"Heat, The (1995)",(no genres listed)\n'
    )
    data = detect_and_load(tmp_path)
    assert [r["event_value"] for r in rows(data)] == [4.0, 4.5]
    assert data.items[1] == {"item_id": "3", "title": "Heat, The (1995)", "genres": "", "release_year": 1995}
    assert data.users == [{"user_id": "1"}]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: (d / "u.item").unlink(), r"u\.item: file not found"),
        (lambda d: (d / "u.data").write_text("1\t1\t5\t874965758\n1\t2\tfive\t874965758\n"),
         r"u\.data:2: rating 'five' is not a valid float"),
        (lambda d: (d / "u.data").write_text("1\t1\t5\n"), r"u\.data:1: expected at least 4 fields"),
        (lambda d: (d / "u.user").write_text("1|old|M|x|1\n"), r"u\.user:1: age 'old' is not a valid int"),
        (lambda d: (d / "u.item").write_text("1|T|x|x|x|" + "|".join(["2"] * 19) + "\n"),
         r"u\.item:1: genre flags must be 0 or 1"),
        (lambda d: (d / "u.data").write_bytes(b"1\t1\t5\t\xff\xfe\n"), r"u\.data: not valid utf-8"),
    ],
)  # fmt: skip
def test_corrupt_files_name_file_and_line(tmp_path, mutate, message):
    directory = write_ml100k(tmp_path / "ml", ["1\t1\t5\t874965758"])
    mutate(directory)
    with pytest.raises(MovieLensFormatError, match=message):
        detect_and_load(directory)


def test_latest_small_bad_header(tmp_path):
    (tmp_path / "ratings.csv").write_text("user,movie,rating,ts\n1,1,4,1\n")
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n")
    with pytest.raises(MovieLensFormatError, match=r"ratings\.csv:1: expected header userId,movieId"):
        detect_and_load(tmp_path)


def count(url: str, table) -> int:
    with create_engine(url).connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_seed_command_loads_refuses_and_replaces(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'src.db'}"
    args = ["--url", url, "--end", "2026-11-23", "synthetic", "--users", "20", "--items", "10",
            "--interactions", "500", "--days", "5"]  # fmt: skip
    assert seed_main(args) == 0
    assert count(url, schema.interactions) == 500 and count(url, schema.users) == 20
    assert seed_main(args) == 2
    assert "already has 500 interactions" in capsys.readouterr().err
    assert seed_main(["--replace", *args]) == 0
    assert count(url, schema.interactions) == 500
    assert seed_main(["--append", *args]) == 0
    assert count(url, schema.interactions) == 1000 and count(url, schema.users) == 20


def test_seed_movielens_with_retime(tmp_path):
    directory = write_ml100k(tmp_path / "ml", ["1\t1\t5\t874965758", "2\t2\t3\t876893171", "1\t2\t4\t875000000"])
    url = f"sqlite:///{tmp_path / 'ml.db'}"
    assert seed_main(["--url", url, "--end", "2026-11-23", "movielens", str(directory), "--retime-days", "10"]) == 0
    with create_engine(url).connect() as conn:
        times = sorted(conn.execute(select(schema.interactions.c.occurred_at)).scalars())
    assert times[0] == datetime(2026, 11, 13) and times[-1] < datetime(2026, 11, 23)
    assert times[-1] > datetime(2026, 11, 22, 23, 59)


def test_corrupt_movielens_leaves_the_database_untouched(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'src.db'}"
    assert seed_main(["--url", url, "synthetic", "--users", "5", "--items", "5", "--interactions", "50"]) == 0
    directory = write_ml100k(tmp_path / "ml", ["1\t1\t5\t874965758"] * 10 + ["1\t1\tbad\t874965758"])
    assert seed_main(["--url", url, "--replace", "movielens", str(directory)]) == 2
    assert "u.data:11: rating 'bad'" in capsys.readouterr().err
    assert count(url, schema.interactions) == 50  # the replace never started
    missing = tmp_path / "nowhere.db"
    assert seed_main(["--url", f"sqlite:///{missing}", "movielens", str(tmp_path / "absent")]) == 2
    assert not os.path.exists(missing)
