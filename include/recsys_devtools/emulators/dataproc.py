"""A local Dataproc Serverless that really runs the submitted PySpark batch, over the provider's own transport.

The Google provider's ``DataprocHook`` (and the ``DataprocBatchTrigger``'s asyncio client) always address
``{region}-dataproc.googleapis.com:443`` over gRPC with TLS; the endpoint cannot be configured. So this
fake serves the real services (``google.cloud.dataproc.v1.BatchController``: CreateBatch, GetBatch,
ListBatches, DeleteBatch; ``google.longrunning.Operations``: GetOperation, ListOperations,
CancelOperation, DeleteOperation) on a loopback TLS port, with a certificate for the regional host names
signed by its own CA, behind an HTTP CONNECT proxy that routes ``*dataproc.googleapis.com:443`` there and
refuses every other host. gRPC's own settings point a process at it (:meth:`DataprocFake.client_env`):
``grpc_proxy`` (read by gRPC alone, per channel: HTTP clients are unaffected; loopback is excluded) and
``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`` (the CA, read once per process before its first TLS channel).

A batch is a ``spark-submit --master local[2]`` process (:class:`~recsys_devtools.emulators.spark_engines.
SparkRun`) of ``pyspark_batch``: ``gs://`` code fetched from GCS (the fake GCS server in the tests, through
``STORAGE_EMULATOR_HOST``), ``file://`` used as it is, ``runtime_config.properties`` as ``--conf``.
CreateBatch answers an Operation (metadata: ``BatchOperationMetadata``) that is done when the batch ends,
ALREADY_EXISTS for a batch id in use (the operator then reattaches to that batch) and INVALID_ARGUMENT for
a malformed request. ``lose_answer("CreateBatch")`` carries out the next such call and answers UNAVAILABLE,
as when the caller dies after the call landed.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import threading
import uuid
from concurrent import futures
from pathlib import Path

import grpc
from google.cloud.dataproc_v1.types import batches as types
from google.cloud.dataproc_v1.types import operations as operation_types
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, empty_pb2
from google.rpc import status_pb2

from recsys_devtools.emulators.spark_engines import SparkRun, spark_submit

BATCH_ID = re.compile(r"^[a-z0-9][a-z0-9-]{2,61}[a-z0-9]$")  # 4-63 characters of [a-z0-9-]
PARENT = re.compile(r"^projects/([^/]+)/(?:locations|regions)/([^/]+)$")  # the provider sends regions/
STATES = {"RUNNING": "RUNNING", "SUCCEEDED": "SUCCEEDED", "FAILED": "FAILED", "CANCELLED": "CANCELLED"}
FAILED_CODES = {"FAILED": grpc.StatusCode.INTERNAL, "CANCELLED": grpc.StatusCode.CANCELLED}


class DataprocFake:
    """``with DataprocFake(work_dir, regions) as fake:``; ``calls`` records ``(method, request)``."""

    def __init__(self, work_dir: Path, regions: tuple[str, ...] = ("europe-west4",)):
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.hosts = [f"{region}-dataproc.googleapis.com" for region in regions] + ["dataproc.googleapis.com"]
        self.ca_path, self._key_and_chain = _certificates(self.work_dir, self.hosts)
        self.calls: list[tuple[str, object]] = []
        self.batches: dict[str, dict] = {}  # batch name -> {"batch", "run", "operation"}
        self.requests: dict[str, str] = {}  # request_id -> operation name
        self._lost: set[str] = set()
        self._lock = threading.Lock()
        self._proxy = _ConnectProxy(self.hosts)

    def client_env(self) -> dict[str, str]:
        """What a process needs in its environment for the provider's clients to reach this fake."""
        return {
            "grpc_proxy": f"http://127.0.0.1:{self._proxy.port}",
            "no_grpc_proxy": "127.0.0.1,localhost",  # loopback gRPC (e.g. TensorFlow's workers) stays direct
            "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": self.ca_path,
        }

    def lose_answer(self, method: str) -> None:
        self._lost.add(method)

    # ---- BatchController -------------------------------------------------------------------------
    def CreateBatch(self, request: types.CreateBatchRequest, context) -> operations_pb2.Operation:  # noqa: N802
        parent = _location(request.parent, context)
        if request.request_id and request.request_id in self.requests:  # the API is idempotent on request_id
            return self._operation(self.requests[request.request_id])
        batch_id = request.batch_id or f"batch-{uuid.uuid4().hex[:12]}"
        if not BATCH_ID.match(batch_id):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"batch_id {batch_id!r}: 4-63 characters of [a-z0-9-]")
        name = f"{parent}/batches/{batch_id}"
        if name in self.batches:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, f"Batch {name} already exists")
        command = self._command(request.batch, context)
        batch = types.Batch(request.batch)
        batch.name, batch.uuid, batch.creator = name, str(uuid.uuid4()), "emulated@recsys"
        batch.create_time = dt.datetime.now(dt.UTC)
        operation = parent.replace("/locations/", "/regions/") + f"/operations/{uuid.uuid4()}"
        run = SparkRun(command, self.work_dir / f"{batch_id}.log")
        self.batches[name] = {"batch": batch, "run": run, "operation": operation}
        if request.request_id:
            self.requests[request.request_id] = operation
        if "CreateBatch" in self._lost:
            self._lost.discard("CreateBatch")
            context.abort(grpc.StatusCode.UNAVAILABLE, "the answer was lost (the batch was created)")
        return self._operation(operation)

    def GetBatch(self, request: types.GetBatchRequest, context) -> types.Batch:  # noqa: N802
        return self._batch(request.name, context)

    def ListBatches(self, request: types.ListBatchesRequest, context) -> types.ListBatchesResponse:  # noqa: N802
        parent = _location(request.parent, context)
        found = [self._batch(name, context) for name in self.batches if name.startswith(parent + "/")]
        return types.ListBatchesResponse(batches=found)

    def DeleteBatch(self, request: types.DeleteBatchRequest, context) -> empty_pb2.Empty:  # noqa: N802
        if self._batch(request.name, context).state == types.Batch.State.RUNNING:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"Batch {request.name} is running")
        del self.batches[request.name]
        return empty_pb2.Empty()

    def _batch(self, name: str, context) -> types.Batch:
        record = self.batches.get(name)
        if record is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Batch {name} not found")
        state, message = record["run"].state()
        batch = record["batch"]
        if batch.state.name != STATES[state]:
            batch.state, batch.state_message = types.Batch.State[STATES[state]], message
            batch.state_time = dt.datetime.now(dt.UTC)
        return batch

    def _command(self, batch: types.Batch, context) -> list[str]:
        spark = batch.pyspark_batch
        if not spark.main_python_file_uri.endswith(".py"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "pyspark_batch.main_python_file_uri must name a .py file")
        try:
            options = []
            if spark.python_file_uris:
                options += ["--py-files", ",".join(map(self._fetched, spark.python_file_uris))]
            if spark.jar_file_uris:
                options += ["--jars", ",".join(map(self._fetched, spark.jar_file_uris))]
            for key, value in batch.runtime_config.properties.items():
                options += ["--conf", f"{key}={value}"]
            return spark_submit(self._fetched(spark.main_python_file_uri), list(spark.args), options)
        except (ValueError, FileNotFoundError) as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))

    def _fetched(self, uri: str) -> str:
        """A local path for a code URI: ``gs://`` downloaded (as Dataproc stages it), ``file://`` as it is."""
        if uri.startswith("file://"):
            return uri.removeprefix("file://")
        if not uri.startswith("gs://"):
            raise ValueError(f"{uri!r}: Dataproc reads code from gs:// (or file:// on its image)")
        import fsspec

        target = self.work_dir / "code" / uri.removeprefix("gs://")
        target.parent.mkdir(parents=True, exist_ok=True)
        with fsspec.open(uri, "rb") as source:
            target.write_bytes(source.read())
        return str(target)

    # ---- Operations ------------------------------------------------------------------------------
    def GetOperation(self, request: operations_pb2.GetOperationRequest, context) -> operations_pb2.Operation:  # noqa: N802
        if not any(r["operation"] == request.name for r in self.batches.values()):
            context.abort(grpc.StatusCode.NOT_FOUND, f"Operation {request.name} not found")
        return self._operation(request.name)

    def ListOperations(self, request, context) -> operations_pb2.ListOperationsResponse:  # noqa: N802
        names = [r["operation"] for r in self.batches.values() if r["operation"].startswith(request.name)]
        return operations_pb2.ListOperationsResponse(operations=[self._operation(n) for n in names])

    def CancelOperation(self, request, context) -> empty_pb2.Empty:  # noqa: N802
        for record in self.batches.values():
            if record["operation"] == request.name:
                record["run"].cancel()
                return empty_pb2.Empty()
        context.abort(grpc.StatusCode.NOT_FOUND, f"Operation {request.name} not found")

    def DeleteOperation(self, request, context) -> empty_pb2.Empty:  # noqa: N802
        return empty_pb2.Empty()

    def _operation(self, name: str) -> operations_pb2.Operation:
        record = next(r for r in self.batches.values() if r["operation"] == name)
        batch = self._batch(record["batch"].name, None)
        metadata = operation_types.BatchOperationMetadata(
            batch=batch.name,
            batch_uuid=batch.uuid,
            create_time=batch.create_time,
            operation_type=operation_types.BatchOperationMetadata.BatchOperationType.BATCH,
        )
        answer = operations_pb2.Operation(name=name)
        answer.metadata.Pack(operation_types.BatchOperationMetadata.pb(metadata))
        state = batch.state.name
        if state == "SUCCEEDED":
            answer.done = True
            answer.response.CopyFrom(_packed(types.Batch.pb(batch)))
        elif state in FAILED_CODES:
            answer.done = True
            answer.error.CopyFrom(status_pb2.Status(code=FAILED_CODES[state].value[0], message=batch.state_message))
        return answer

    # ---- serving ---------------------------------------------------------------------------------
    def _handlers(self) -> list[grpc.GenericRpcHandler]:
        def method(name: str, request_type):
            def handle(request, context):
                with self._lock:
                    self.calls.append((name, request))
                    answer = getattr(self, name)(request, context)
                return (
                    answer.SerializeToString()
                    if hasattr(answer, "SerializeToString")
                    else type(answer).serialize(answer)
                )

            deserialize = getattr(request_type, "deserialize", None) or request_type.FromString  # proto-plus or pb
            return grpc.unary_unary_rpc_method_handler(handle, request_deserializer=deserialize)

        batches = {
            name: method(name, getattr(types, f"{name}Request"))
            for name in ("CreateBatch", "GetBatch", "ListBatches", "DeleteBatch")
        }
        operations = {
            name: method(name, getattr(operations_pb2, f"{name}Request"))
            for name in ("GetOperation", "ListOperations", "CancelOperation", "DeleteOperation")
        }
        return [
            grpc.method_handlers_generic_handler("google.cloud.dataproc.v1.BatchController", batches),
            grpc.method_handlers_generic_handler("google.longrunning.Operations", operations),
        ]

    def __enter__(self) -> DataprocFake:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), handlers=self._handlers())
        credentials = grpc.ssl_server_credentials([self._key_and_chain])
        self._proxy.upstream = self._server.add_secure_port("127.0.0.1:0", credentials)
        self._server.start()
        self._proxy.start()
        return self

    def __exit__(self, *exc) -> None:
        self._proxy.close()
        self._server.stop(grace=None)
        for record in self.batches.values():
            if record["run"].process.poll() is None:
                record["run"].process.kill()


def _location(parent: str, context) -> str:
    """``projects/{p}/locations/{r}`` for a parent in either form the service accepts."""
    if not (match := PARENT.match(parent)):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"parent {parent!r} is not projects/*/locations/*")
    return f"projects/{match[1]}/locations/{match[2]}"


def _packed(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class _ConnectProxy(threading.Thread):
    """An HTTP CONNECT proxy on loopback that tunnels the given hosts' port 443 to ``upstream``."""

    def __init__(self, hosts: list[str]):
        super().__init__(daemon=True)
        self.hosts, self.upstream = set(hosts), 0
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]

    def run(self) -> None:
        while True:
            try:
                client, _ = self._socket.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head and (chunk := client.recv(4096)):
            head += chunk
        request, _, rest = head.partition(b"\r\n\r\n")
        method, target, *_ = request.split(b"\r\n")[0].decode(errors="replace").split(" ") + ["", ""]
        host, _, port = target.rpartition(":")
        if method != "CONNECT" or host not in self.hosts or port != "443":
            client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.upstream))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if rest:
            upstream.sendall(rest)
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)

    def close(self) -> None:
        self._socket.close()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, target):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _certificates(folder: Path, hosts: list[str]) -> tuple[str, tuple[bytes, bytes]]:
    """A CA (its PEM file's path) and a server key + chain for ``hosts`` signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def certificate(subject: str, key, issuer: str, signer, ca: bool, names: list[str]):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("recsys emulated CA", ca_key, "recsys emulated CA", ca_key, True, [])
    server = certificate(hosts[0], server_key, "recsys emulated CA", ca_key, False, hosts)
    pem = serialization.Encoding.PEM
    ca_path = folder / "emulated-ca.pem"
    ca_path.write_bytes(ca.public_bytes(pem))
    key = server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return str(ca_path), (key, server.public_bytes(pem) + ca.public_bytes(pem))
