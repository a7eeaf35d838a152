# The Airflow image for docker-compose.yaml: the official image plus this repo's pinned requirements
# (never _PIP_ADDITIONAL_REQUIREMENTS) and the recsys package on PYTHONPATH.
FROM apache/airflow:3.3.2-python3.11

ENV TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONPATH=/opt/airflow/include

# Java 17 and the JDBC drivers for extraction_backend=spark-local (pyspark comes from requirements.txt).
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless libpostgresql-jdbc-java libmariadb-java \
    && rm -rf /var/lib/apt/lists/*
USER airflow
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/airflow/requirements/
RUN pip install --no-cache-dir \
        -r /opt/airflow/requirements/requirements.txt \
        -c /opt/airflow/requirements/constraints.txt

COPY --chown=airflow:0 include /opt/airflow/include
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins
