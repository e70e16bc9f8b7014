"""Client: the qlorad.v1 QLoRA service as typed Python methods.

    import qlorad
    with qlorad.connect("127.0.0.1:50051", token="...") as client:
        for event in client.quantize(model_path="tiny", output_path="tiny-nf4"):
            print(qlorad.describe(event))

Job RPCs (quantize, train, evaluate, generate, export, watch) return a JobStream of JobEvents that resumes a
dropped stream from the last seq; the other RPCs return their response message. Every failed call
raises the QloradError subclass of its gRPC code (InvalidArgument, NotFound, Unavailable, ...).

Requests are given as the message (qlorad.pb.TrainRequest(...)) or as its fields by keyword;
an unknown field name raises ValueError before anything is sent.

A job RPC added to the proto later is one method here:
`return self.start_job(self.stub.Rpc, pb.RpcRequest, request, fields)`; until then
`start_job` runs it with the stub the user regenerated. generate and export take their fields
as typed keywords (generation.py builds the requests); generate_text yields the text pieces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from .errors import Unavailable, from_rpc_error
from .generation import GeneratedText, Message, export_request, generate_request
from .stream import JobStream, ReconnectHook
from .v1 import qlorad_pb2 as pb
from .v1 import qlorad_pb2_grpc as pb_grpc

M = TypeVar("M", bound=Message)


def _pem(value: str | Path | bytes | None) -> bytes | None:
    """PEM bytes from a file path or the bytes themselves."""
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


def _request(cls: type[M], request: M | None, fields: dict[str, Any]) -> M:
    if request is not None and fields:
        raise TypeError(f"give a {cls.__name__} or its fields, not both")
    if request is None:
        return cls(**fields)
    if not isinstance(request, cls):
        raise TypeError(f"expected a {cls.__name__}, got {type(request).__name__}")
    return request


class Client:
    """A connection to a qlorad server; every call carries the bearer token, if any."""

    def __init__(self, channel: grpc.Channel, *, token: str | None = None,
                 retries: int = 8, on_reconnect: ReconnectHook | None = None):
        self.channel = channel
        #: The generated stub, for RPCs this class does not wrap yet.
        self.stub = pb_grpc.QLoRAStub(channel)
        self.metadata: list[tuple[str, str]] = (
            [("authorization", f"Bearer {token}")] if token else []
        )
        self.retries = retries
        #: Told before each WatchJob that resumes a dropped stream: (job_id, from_seq, reason).
        self.on_reconnect = on_reconnect

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Job RPCs: a JobStream each.

    def quantize(self, request: pb.QuantizeRequest | None = None, /, **fields: Any) -> JobStream:
        """Quantizes a Hugging Face checkpoint folder to 4 bits (NF4 or FP4)."""
        return self.start_job(self.stub.Quantize, pb.QuantizeRequest, request, fields)

    def train(self, request: pb.TrainRequest | None = None, /, **fields: Any) -> JobStream:
        """Trains a LoRA adapter on a 4-bit base."""
        return self.start_job(self.stub.Train, pb.TrainRequest, request, fields)

    def evaluate(self, request: pb.EvaluateRequest | None = None, /, **fields: Any) -> JobStream:
        """Evaluates a base model, or a base model plus an adapter, on a dataset."""
        return self.start_job(self.stub.Evaluate, pb.EvaluateRequest, request, fields)

    def generate(self, request: pb.GenerateRequest | None = None, /, *,
                 base_model_path: str = "", prompt: str = "",
                 messages: Iterable[Message] = (), adapter_path: str = "",
                 max_new_tokens: int = 0, temperature: float = 0.0, top_k: int = 0,
                 top_p: float | None = None, seed: int = 0, stop: Iterable[str] = (),
                 ignore_eos: bool = False, request_id: str = "") -> JobStream:
        """Generates text from a prompt or chat messages with a base model (and an adapter).

        The JobStream has a GeneratedText event per token, then the SUCCEEDED event with the
        GenerateResult. Unlike other jobs, the generation follows its call: closing the stream
        cancels it (so a dropped stream is not resumed). 0 / None / empty mean the default.
        """
        if request is None:
            request = generate_request(
                base_model_path=base_model_path, prompt=prompt, messages=messages,
                adapter_path=adapter_path, max_new_tokens=max_new_tokens,
                temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, stop=stop,
                ignore_eos=ignore_eos, request_id=request_id)
        elif base_model_path or prompt or messages or adapter_path or request_id:
            raise TypeError("give a GenerateRequest or its fields, not both")
        return self.start_job(self.stub.Generate, pb.GenerateRequest, request, {})

    def generate_text(self, request: pb.GenerateRequest | None = None, /,
                      **fields: Any) -> GeneratedText:
        """generate(...)'s text pieces as they come; `.result` is the GenerateResult after."""
        return GeneratedText(self.generate(request, **fields))

    def export(self, request: pb.ExportRequest | None = None, /, *,
               base_model_path: str = "", output_path: str = "", adapter_path: str = "",
               format: int | str = pb.EXPORT_FORMAT_UNSPECIFIED,
               type: int | str = pb.EXPORT_TYPE_UNSPECIFIED, overwrite: bool = False,
               request_id: str = "") -> JobStream:
        """Exports a base model, or base plus adapter, as GGUF (merged or LoRA) or a merged
        Hugging Face folder; a Progress event per tensor, then the ExportResult.

        format: "gguf_merged" (default), "gguf_lora", "hf_merged" or the enum; type: "f32",
        "f16", "bf16", "q8_0", "q4_0" or the enum (default F16 for GGUF, BF16 for HF).
        """
        if request is None:
            request = export_request(
                base_model_path=base_model_path, output_path=output_path,
                adapter_path=adapter_path, format=format, type=type, overwrite=overwrite,
                request_id=request_id)
        elif base_model_path or output_path or adapter_path or request_id:
            raise TypeError("give an ExportRequest or its fields, not both")
        return self.start_job(self.stub.Export, pb.ExportRequest, request, {})

    def watch(self, job_id: str, from_seq: int = 1) -> JobStream:
        """A job's events from seq `from_seq` on (1: all), live until it ends."""
        return JobStream(
            lambda: self._watch_call(job_id, from_seq), self._watch_call,
            job_id=job_id, last_seq=max(from_seq, 1) - 1,
            retries=self.retries, on_reconnect=self.on_reconnect,
        )

    def start_job(self, rpc: Callable[..., Any], cls: type[M], request: M | None,
                  fields: dict[str, Any]) -> JobStream:
        """Starts a job-streaming RPC of the stub (`rpc`) with a `cls` request."""
        message = _request(cls, request, fields)
        return JobStream(
            lambda: rpc(message, metadata=self.metadata), self._watch_call,
            retries=self.retries, on_reconnect=self.on_reconnect,
        )

    def _watch_call(self, job_id: str, from_seq: int) -> Any:
        return self.stub.WatchJob(
            pb.WatchJobRequest(job_id=job_id, from_seq=from_seq), metadata=self.metadata)

    # Unary RPCs: the response message each.

    def _unary(self, rpc: Callable[..., Any], message: Message) -> Any:
        try:
            return rpc(message, metadata=self.metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err

    def get_job(self, job_id: str) -> pb.Job:
        """One job's record; NotFound for an unknown id."""
        return self._unary(self.stub.GetJob, pb.GetJobRequest(job_id=job_id))

    def list_jobs(self, *, kind: int = pb.JOB_KIND_UNSPECIFIED, states: Sequence[int] = (),
                  limit: int = 0) -> list[pb.Job]:
        """Jobs, newest first; filtered by kind and states, at most `limit` (0: all)."""
        response = self._unary(
            self.stub.ListJobs, pb.ListJobsRequest(kind=kind, states=states, limit=limit))
        return list(response.jobs)

    def cancel_job(self, job_id: str) -> pb.Job:
        """Cancels a queued or running job; its record after the request."""
        return self._unary(self.stub.CancelJob, pb.CancelJobRequest(job_id=job_id)).job

    def estimate_memory(self, request: pb.EstimateMemoryRequest | None = None, /,
                        **fields: Any) -> pb.EstimateMemoryResponse:
        """Bytes of device memory a training run would use, by category."""
        return self._unary(self.stub.EstimateMemory,
                           _request(pb.EstimateMemoryRequest, request, fields))


def connect(
    target: str,
    *,
    token: str | None = None,
    tls: bool = False,
    ca_cert: str | Path | bytes | None = None,
    client_cert: str | Path | bytes | None = None,
    client_key: str | Path | bytes | None = None,
    server_name: str | None = None,
    timeout: float | None = 15.0,
    retries: int = 8,
    on_reconnect: ReconnectHook | None = None,
) -> Client:
    """Opens a channel to `target` (host:port) and, unless timeout is None, waits until ready.

    token: sent as "authorization: Bearer <token>" (the server's QLORAD_AUTH_TOKEN).
    tls: TLS with the system roots; ca_cert (PEM file or bytes) implies TLS with that CA.
    client_cert, client_key: a client certificate, for a server with --tls-client-ca.
    server_name: the name to check the server's certificate against, when it is not the host.
    A server that does not answer in time raises Unavailable.
    """
    if (client_cert is None) != (client_key is None):
        raise ValueError("client_cert and client_key go together")
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    if tls or ca_cert is not None or client_cert is not None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_pem(ca_cert), private_key=_pem(client_key),
            certificate_chain=_pem(client_cert))
        channel = grpc.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    if timeout is not None:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            channel.close()
            raise Unavailable(f"cannot reach qlorad at {target} within {timeout:g}s") from None
    return Client(channel, token=token, retries=retries, on_reconnect=on_reconnect)
