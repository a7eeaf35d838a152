# Prediction server for Vertex AI custom containers (Vertex's prebuilt TF images cannot load ScaNN ops).
#   docker build -f docker/serving.Dockerfile -t REGION-docker.pkg.dev/PROJECT/recsys/serving:TAG .
# Vertex sets AIP_HTTP_PORT, AIP_HEALTH_ROUTE, AIP_PREDICT_ROUTE and AIP_STORAGE_URI (the model's GCS folder).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONPATH=/app/include \
    AIP_HTTP_PORT=8080

WORKDIR /app
COPY requirements-serving.txt constraints.txt /app/
# LightGBM (the ranking stage) needs the OpenMP runtime, which the slim image lacks
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir -r requirements-serving.txt -c constraints.txt

COPY include /app/include
RUN useradd --create-home serving
USER serving

EXPOSE 8080
ENTRYPOINT ["python", "-m", "recsys.serving"]
