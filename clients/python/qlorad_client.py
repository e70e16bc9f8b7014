"""A small client library for qlorad (package qlorad.v1, service QLoRA).

    client = connect("127.0.0.1:50051")                 # plaintext
    client = connect("host:443", tls=True, token="...")  # TLS, bearer token
    for event in client.follow(client.stub.Quantize, pb.QuantizeRequest(...)):
        print(describe(event))
    outcome = run_job(client, client.stub.Train, request, ProgressPrinter())

`follow` starts a job-streaming RPC (Quantize, Train, Evaluate) and yields its JobEvents up to
the final one. Jobs outlive streams: if the stream drops after the job exists, it reconnects
with WatchJob(job_id, from_seq=last seq + 1) and carries on where it left off.

Needs the generated stubs (bash clients/python/generate.sh) and Debian's python3-grpcio.
"""

import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "gen"))

import grpc  # noqa: E402
from google.protobuf import text_format  # noqa: E402
from qlorad.v1 import qlorad_pb2 as pb  # noqa: E402
from qlorad.v1 import qlorad_pb2_grpc as pb_grpc  # noqa: E402

TERMINAL_STATES = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)


def state_name(state):
    """JOB_STATE_SUCCEEDED -> SUCCEEDED."""
    return pb.JobState.Name(state).removeprefix("JOB_STATE_")


class Client:
    """A QLoRA stub plus the call metadata (bearer token) every call carries."""

    def __init__(self, channel, token=None):
        self.channel = channel
        self.stub = pb_grpc.QLoRAStub(channel)
        self.metadata = [("authorization", f"Bearer {token}")] if token else []

    def close(self):
        self.channel.close()

    def follow(self, rpc, request, *, drop_after=0, retries=8, on_reconnect=None):
        """Runs a job-streaming RPC and yields its JobEvents, ending with the final one.

        A refused request (no job was created) raises grpc.RpcError. Once the job exists, a
        broken stream is resumed with WatchJob from the next seq, up to `retries` times in a
        row with backoff. `drop_after` > 0 cancels the first stream after that many events, to
        exercise the reconnect. `on_reconnect(job_id, from_seq, reason)` is called before each
        WatchJob.
        """
        call = rpc(request, metadata=self.metadata)
        job_id, last_seq, failures, received = None, 0, 0, 0
        try:
            while True:
                reason = "the stream ended before the job did"
                try:
                    for event in call:
                        job_id, last_seq, failures = event.job_id, event.seq, 0
                        received += 1
                        yield event
                        if event.state in TERMINAL_STATES:
                            return  # a failed job's status may follow; this event says it all
                        if received == drop_after:
                            call.cancel()
                            reason = f"dropped after {received} events (--drop-after)"
                            break
                except grpc.RpcError as err:
                    if job_id is None or failures >= retries:
                        raise  # refused before any job existed, or the server stays away
                    reason = f"{err.code().name}: {err.details()}"
                    time.sleep(min(0.25 * 2**failures, 5.0))
                    failures += 1
                if on_reconnect:
                    on_reconnect(job_id, last_seq + 1, reason)
                call = self.stub.WatchJob(
                    pb.WatchJobRequest(job_id=job_id, from_seq=last_seq + 1),
                    metadata=self.metadata,
                )
        finally:
            call.cancel()


def connect(target, *, tls=False, ca_cert=None, token=None, timeout=15.0):
    """Opens a channel to `target` (host:port) and waits until it is ready.

    tls: use TLS with the system roots, or with `ca_cert` (a PEM file) when given.
    token: sent as "authorization: Bearer <token>" on every call.
    """
    if tls or ca_cert:
        roots = Path(ca_cert).read_bytes() if ca_cert else None
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=roots))
    else:
        channel = grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        channel.close()
        raise ConnectionError(f"cannot reach qlorad at {target} within {timeout:g}s") from None
    return Client(channel, token)


def format_duration(seconds):
    """12345.6 -> 3:25:46."""
    s = max(0, round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def describe(event):
    """One line for an event: progress, metrics, results, errors."""
    kind = event.WhichOneof("payload")
    if kind == "progress":
        p = event.progress
        return f"[{p.index:>3}/{p.total}] {p.message}" if p.total else p.message
    if kind == "train_metrics":
        m = event.train_metrics
        return (
            f"step {m.step}/{m.total_steps}  loss {m.loss:.4f}  lr {m.learning_rate:.2e}  "
            f"{m.tokens_per_second:.0f} tok/s  ETA {format_duration(m.eta_seconds)}"
        )
    if kind == "checkpoint":
        c = event.checkpoint
        return f"{'adapter' if c.is_final else 'checkpoint'} at step {c.step}: {c.path}"
    if kind == "eval_result":
        return "eval " + format_eval(event.eval_result)
    if kind == "quantize_result":
        q = event.quantize_result
        return (
            f"quantized {q.tensors_quantized} tensors ({q.parameters_quantized} parameters), "
            f"kept {q.tensors_kept}; {q.bits_per_parameter:.3f} bits/parameter -> {q.output_path}"
        )
    if kind == "error":
        return f"error {event.error.code}: {event.error.message}"
    if kind == "log":
        level = pb.LogLevel.Name(event.log.level).removeprefix("LOG_LEVEL_")
        return f"{level.lower()}: {event.log.message}"
    if kind:  # a payload this client does not format: show its fields
        return f"{kind}: {text_format.MessageToString(getattr(event, kind), as_one_line=True)}"
    return state_name(event.state)


def format_eval(r):
    return (
        f"loss {r.loss:.6f}  perplexity {r.perplexity:.3f}  "
        f"token_accuracy {r.token_accuracy:.4f}  tokens {r.tokens}"
    )


@dataclass
class JobOutcome:
    """What a followed job ended with."""

    job_id: str
    state: int
    final: pb.JobEvent
    # The last event of each payload kind ("train_metrics", "checkpoint", ...).
    latest: dict

    @property
    def succeeded(self):
        return self.state == pb.JOB_STATE_SUCCEEDED

    def last(self, kind):
        """The last payload of this kind (e.g. "train_metrics"), or None."""
        event = self.latest.get(kind)
        return getattr(event, kind) if event else None


class ProgressPrinter:
    """Prints events: one line each, or, on a terminal, training steps on one updating line."""

    def __init__(self, out=sys.stdout):
        self.out = out
        self.live = out.isatty()
        self.open_line = False

    def event(self, event):
        line = describe(event)
        if self.live and event.WhichOneof("payload") == "train_metrics":
            self.out.write("\r\033[K  " + line)
            self.open_line = True
        else:
            self.line(line)
        self.out.flush()

    def line(self, text):
        if self.open_line:
            self.out.write("\n")
            self.open_line = False
        self.out.write("  " + text + "\n")
        self.out.flush()


def run_job(client, rpc, request, printer, *, drop_after=0):
    """Follows a job to its end, printing its events; returns a JobOutcome."""

    def reconnecting(job_id, from_seq, reason):
        printer.line(
            f"stream lost ({reason}); reconnecting: WatchJob({job_id}, from_seq={from_seq})"
        )

    last, latest = None, {}
    for event in client.follow(rpc, request, drop_after=drop_after, on_reconnect=reconnecting):
        if last is None:
            printer.line(f"job {event.job_id}")
        printer.event(event)
        last = event
        if event.WhichOneof("payload"):
            latest[event.WhichOneof("payload")] = event
    return JobOutcome(last.job_id, last.state, last, latest)
