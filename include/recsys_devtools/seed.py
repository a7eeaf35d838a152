"""Fill a source database (any SQLAlchemy URL) with demo data.

    python -m recsys_devtools.seed --url sqlite:///demo.db synthetic --days 30
    python -m recsys_devtools.seed --url postgresql+psycopg2://u@host/db --replace \
        movielens path/to/ml-100k --retime-days 30

Input files are parsed completely before the database is touched, and the load is one
transaction: an error leaves the database as it was.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, date, datetime, time

from sqlalchemy import create_engine

from recsys.data.dataset import SourceDataset, SourceNotEmptyError, write_dataset
from recsys_devtools.movielens import MovieLensFormatError, detect_and_load, retime
from recsys_devtools.synthetic import SyntheticSpec, synthetic_dataset


def _end_of(day: str | None) -> datetime:
    """Midnight UTC (naive) at the end of ``day``'s previous day; default: today's midnight."""
    chosen = date.fromisoformat(day) if day else datetime.now(UTC).date()
    return datetime.combine(chosen, time())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recsys_devtools.seed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="SQLAlchemy URL of the source database")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--replace", action="store_true", help="delete existing rows first")
    mode.add_argument("--append", action="store_true", help="add to existing rows")
    parser.add_argument("--end", help="data ends at midnight UTC of this date (YYYY-MM-DD; default today)")
    sub = parser.add_subparsers(dest="source", required=True)
    syn = sub.add_parser("synthetic", help="deterministic synthetic data")
    for name, default in vars(SyntheticSpec()).items():
        syn.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    ml = sub.add_parser("movielens", help="MovieLens 100K (u.data) or ml-latest-small (ratings.csv) files")
    ml.add_argument("path", help="directory holding the files")
    ml.add_argument("--retime-days", type=int, default=None, help="spread the ratings over the last N days")
    return parser


def load_source(args: argparse.Namespace) -> SourceDataset:
    end = _end_of(args.end)
    if args.source == "synthetic":
        spec = SyntheticSpec(**{k: getattr(args, k) for k in vars(SyntheticSpec())})
        return synthetic_dataset(spec, end=end)
    dataset = detect_and_load(args.path)
    if args.retime_days:
        if args.retime_days < 1:
            raise ValueError("--retime-days must be >= 1")
        dataset = retime(dataset, args.retime_days, end=end)
    return dataset


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        dataset = load_source(args)
        engine = create_engine(args.url)
        mode = "replace" if args.replace else "append" if args.append else "fail"
        counts = write_dataset(engine, dataset, mode=mode)
    except (MovieLensFormatError, SourceNotEmptyError, ValueError) as exc:
        print(f"seed failed: {exc}", file=sys.stderr)
        return 2
    print(f"seeded {engine.url.render_as_string(hide_password=True)}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
