"""What the Spark backends send: each cloud engine's request validated against the service's own model
(botocore's service definitions for Glue and EMR Serverless, Dataproc's protobuf ``Batch``), the validator
zip the executors import, and the hourly JDBC predicates."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from datetime import date, datetime

import pytest

from recsys.config import load_settings
from recsys.data import spark_extract
from recsys.data.spark_job import hourly_predicates
from recsys.data.validate import Interval

PLAN = {
    "version": "20261201T120000000000Z-abcd1234",
    "spec_uri": "s3://lake/extract/dt=2026-11-10/v=x/_spark/spec.json",
    "script": "s3://lake/code/spark/spark_job-0123.py",
    "py_files": "s3://lake/code/spark/recsys_validate-4567.zip",
    "jars": "s3://lake/code/spark/postgresql-89ab.jar,s3://lake/code/spark/mariadb-java-client-cdef.jar",
}
SETTINGS = load_settings(
    {
        "glue_role_arn": "arn:aws:iam::123456789012:role/recsys-glue",
        "emr_serverless_application_id": "00fabc",
        "emr_serverless_role_arn": "arn:aws:iam::123456789012:role/recsys-emr",
        "vertex_project": "proj",
        "dataproc_service_account": "spark@proj.iam.gserviceaccount.com",
    }
)


def botocore_validate(service: str, operation: str, params: dict) -> None:
    import botocore.session
    from botocore.validate import validate_parameters

    model = botocore.session.get_session().get_service_model(service).operation_model(operation)
    validate_parameters(params, model.input_shape)  # raises ParamValidationError on a wrong shape


def test_glue_requests_match_the_service_model():
    glue = spark_extract.cloud_requests(PLAN, SETTINGS)["glue"]
    botocore_validate("glue", "StartJobRun", {"JobName": glue["job_name"], "Arguments": glue["script_args"]})
    job = {
        "Name": glue["job_name"],
        "Role": glue["iam_role_arn"],
        "Command": {"Name": "glueetl", "ScriptLocation": glue["script_location"]},
        **glue["create_job_kwargs"],
    }
    botocore_validate("glue", "CreateJob", job)
    assert glue["script_args"]["--spec"] == PLAN["spec_uri"] and glue["script_args"]["--extra-jars"] == PLAN["jars"]


def test_emr_serverless_requests_match_the_service_model():
    emr = spark_extract.cloud_requests(PLAN, SETTINGS)["emr-serverless"]
    botocore_validate(
        "emr-serverless",
        "StartJobRun",
        {
            "applicationId": emr["application_id"],
            "clientToken": emr["config"]["clientToken"],
            "executionRoleArn": emr["execution_role_arn"],
            "jobDriver": emr["job_driver"],
            "name": emr["name"],
        },
    )
    submit = emr["job_driver"]["sparkSubmit"]
    assert submit["entryPointArguments"] == ["--spec", PLAN["spec_uri"]]
    assert f"--py-files {PLAN['py_files']} --jars {PLAN['jars']}" in submit["sparkSubmitParameters"]


def test_dataproc_batch_is_a_valid_batch_message():
    from google.cloud.dataproc_v1 import Batch

    dataproc = spark_extract.cloud_requests(PLAN, SETTINGS)["dataproc"]
    batch = Batch(**dataproc["batch"])  # unknown fields or wrong types raise
    assert batch.pyspark_batch.main_python_file_uri == PLAN["script"]
    assert list(batch.pyspark_batch.jar_file_uris) == PLAN["jars"].split(",")
    assert batch.environment_config.execution_config.service_account == "spark@proj.iam.gserviceaccount.com"
    assert dataproc["project_id"] == "proj" and dataproc["region"] == "us-central1"
    batch_id = dataproc["batch_id"]  # Dataproc: 4-63 characters, lower-case letters, digits, hyphens
    assert 4 <= len(batch_id) <= 63 and batch_id == batch_id.lower() and batch_id.replace("-", "").isalnum()


def test_the_validator_zip_is_all_the_executors_need(tmp_path):
    archive = tmp_path / "recsys_validate.zip"
    archive.write_bytes(spark_extract.validator_zip())
    assert sorted(zipfile.ZipFile(archive).namelist()) == [
        "recsys/__init__.py",
        "recsys/data/__init__.py",
        "recsys/data/validate.py",
    ]
    code = f"import sys; sys.path.insert(0, {str(archive)!r}); import recsys.data.validate as v; print(v.__file__)"
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True).stdout
    assert "recsys_validate.zip" in out  # imported from the zip, not from the installed package
    assert spark_extract.validator_zip() == archive.read_bytes()  # deterministic: re-runs upload nothing new


def test_hourly_predicates_cover_the_day_once():
    interval = Interval.for_day(date(2026, 11, 10))
    predicates = hourly_predicates(interval.start, interval.end)
    assert len(predicates) == 24
    assert predicates[0] == (
        "occurred_at >= TIMESTAMP '2026-11-10 00:00:00' AND occurred_at < TIMESTAMP '2026-11-10 01:00:00'"
    )
    assert predicates[-1].endswith("occurred_at < TIMESTAMP '2026-11-11 00:00:00'")


def test_spark_uris_drop_the_airflow_connection():
    assert spark_extract._spark_uri("s3://aws_default@lake/x/y") == "s3://lake/x/y"
    assert spark_extract._spark_uri("gs://bucket/x") == "gs://bucket/x"
    assert spark_extract._spark_uri("/tmp/x").startswith("file:///")


def test_deployed_spark_backends_are_checked():
    from recsys.config import deployed_spark_backends

    assert deployed_spark_backends({}) == ("spark-local",)
    assert deployed_spark_backends({"RECSYS_SPARK_BACKENDS": "glue, dataproc"}) == ("glue", "dataproc")
    with pytest.raises(ValueError, match="unknown"):
        deployed_spark_backends({"RECSYS_SPARK_BACKENDS": "hadoop"})


def test_interval_bounds_are_rendered_from_datetimes_only():
    with pytest.raises(ValueError):
        Interval(datetime(2026, 11, 10), datetime(2026, 11, 11))  # naive: refused before any SQL is rendered
