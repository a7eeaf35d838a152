# Trainer image for Vertex AI custom jobs: runs the same entrypoint as the local Airflow task.
#   docker build -f docker/trainer.Dockerfile -t REGION-docker.pkg.dev/PROJECT/recsys/trainer:TAG .
# Vertex sets AIP_MODEL_DIR, AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR; pass the window as args:
#   --extract-root gs://BUCKET/recsys/extract --end-day 2026-11-22 --window-days 30
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONPATH=/app/include

WORKDIR /app
COPY requirements.txt constraints.txt /app/
# The full pinned set: the trainer reads partitions through Airflow's ObjectStoragePath (gcsfs, s3fs).
# LightGBM (the ranking stage) needs the OpenMP runtime, which the slim image lacks
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir -r requirements.txt -c constraints.txt

COPY include /app/include
RUN useradd --create-home trainer
USER trainer

ENTRYPOINT ["python", "-m", "recsys.training.train"]
