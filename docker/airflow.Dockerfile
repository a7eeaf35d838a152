# The Airflow image for docker-compose.yaml: the official image plus this repo's pinned requirements
# (never _PIP_ADDITIONAL_REQUIREMENTS) and the recsys package on PYTHONPATH.
FROM apache/airflow:3.3.2-python3.11

ENV TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONPATH=/opt/airflow/include

USER airflow
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/airflow/requirements/
RUN pip install --no-cache-dir \
        -r /opt/airflow/requirements/requirements.txt \
        -c /opt/airflow/requirements/constraints.txt

COPY --chown=airflow:0 include /opt/airflow/include
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins
