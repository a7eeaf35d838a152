"""Run the prediction server: ``python -m recsys.serving [--model-dir DIR]``.

Vertex AI's contract: port ``AIP_HTTP_PORT`` (8080), routes ``AIP_HEALTH_ROUTE`` / ``AIP_PREDICT_ROUTE``,
model from ``AIP_STORAGE_URI`` (gs://, s3:// or a local path; remote models are copied to a local
folder once, before the workers start). Uvicorn serves it with ``RECSYS_SERVING_WORKERS`` worker
processes (default 1; each loads the model) and a thread pool per worker; SIGTERM drains in-flight
requests for up to ``RECSYS_SERVING_GRACEFUL_SECONDS`` (default 20) before exiting.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import uvicorn

from recsys.serving.app import configure_logging
from recsys.serving.predictor import fetch_model


def champion_or(model_dir: str) -> str:
    """A models root (with ``champion.json``, as the gate writes it) means: serve its current champion."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(model_dir)
    pointer = path.rstrip("/") + "/champion.json"
    if fs.exists(pointer):
        champion = json.loads(fs.cat_file(pointer))["model_dir"]
        print(f"serving the champion of {model_dir}: {champion}", file=sys.stderr)
        return champion
    return model_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys.serving")
    parser.add_argument(
        "--model-dir",
        default=os.environ.get("AIP_STORAGE_URI"),
        help="exported model folder or URI (default: $AIP_STORAGE_URI)",
    )
    parser.add_argument(
        "--index", choices=["auto", "scann", "brute_force"], default=os.environ.get("RECSYS_SERVING_INDEX", "auto")
    )
    parser.add_argument("--host", default=os.environ.get("RECSYS_SERVING_HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIP_HTTP_PORT", "8080")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("RECSYS_SERVING_WORKERS", "1")))
    args = parser.parse_args(argv)
    if not args.model_dir:
        print("serving: --model-dir or AIP_STORAGE_URI is required", file=sys.stderr)
        return 2
    configure_logging()
    os.environ["RECSYS_SERVING_MODEL_DIR"] = str(fetch_model(champion_or(args.model_dir)))
    os.environ["RECSYS_SERVING_INDEX"] = args.index
    uvicorn.run(
        "recsys.serving.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=int(os.environ.get("RECSYS_SERVING_GRACEFUL_SECONDS", "20")),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
