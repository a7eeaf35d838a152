"""Assets shared between DAGs. Light import: safe at DAG-parse time."""

from airflow.sdk import Asset

EXTRACT_PARTITIONS = Asset(name="recsys_extract_partitions", uri="recsys://extract/partitions")
