"""Local emulators of the cloud APIs this project calls, speaking their real wire protocols.

* :mod:`~recsys_devtools.emulators.vertex` — Vertex AI v1 REST (models, endpoints, deployments that run the
  serving image as a local process, custom jobs that run the trainer image, operations).
* :mod:`~recsys_devtools.emulators.personalize` — Amazon Personalize JSON 1.1 (imports, solution versions,
  batch inference, campaigns) with data in S3.

Used by the test suite and by ``make demo`` (clearly labelled as emulated); never by the DAGs.
"""
