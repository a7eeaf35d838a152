"""Assets shared between DAGs. Light import: safe at DAG-parse time.

Assets are identified by name only: an asset URI with a scheme makes Airflow load every provider's
URI handlers at parse time, which imports boto3 and google-cloud-storage into each DAG parse.
"""

from airflow.sdk import Asset

EXTRACT_PARTITIONS = Asset(name="recsys_extract_partitions")
BLESSED_MODEL = Asset(name="recsys_blessed_model")
