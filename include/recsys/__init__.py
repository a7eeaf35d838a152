"""recsys: the logic behind the recsys-airflow DAGs (extraction, training, serving)."""
