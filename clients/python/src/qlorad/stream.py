"""JobStream: the events of one job, followed to its end across dropped streams.

Jobs outlive streams: when the stream that started a job (or a WatchJob stream) breaks, the job
goes on, and its append-only log (seq 1, 2, 3, ... with no gaps) can be replayed. JobStream
remembers the last seq it yielded and resumes with WatchJob(job_id, from_seq=last_seq + 1), so the
events it yields are each job event exactly once, in order, ending with the one whose state is
final (SUCCEEDED, FAILED or CANCELLED).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from .errors import JobFailed, QloradError, code_named, from_rpc_error
from .v1 import qlorad_pb2 as pb

TERMINAL_STATES = frozenset((pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED))

# Codes after which a WatchJob is worth trying again: the server or the network went away for a
# while. Any other code (NOT_FOUND, UNAUTHENTICATED, ...) will not change by retrying.
RETRYABLE = frozenset((
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED,
))

#: on_reconnect(job_id, from_seq, reason): told before each WatchJob that resumes a stream.
ReconnectHook = Callable[[str, int, str], None]


class JobStream(Iterator[pb.JobEvent]):
    """Iterates over a job's JobEvents up to the final one, resuming dropped streams.

    A request the server refuses (no job was created) raises the typed QloradError on the first
    next(). After that, `job_id`, `last_seq` and, once the job ended, `final` are known.
    `retries`: reconnects in a row without an event before giving up (with backoff 0.25 s
    doubling, at most 5 s); the last error is then raised.
    """

    def __init__(
        self,
        start: Callable[[], Any],
        watch: Callable[[str, int], Any],
        *,
        job_id: str | None = None,
        last_seq: int = 0,
        retries: int = 8,
        on_reconnect: ReconnectHook | None = None,
    ):
        self._call = start()
        self._watch = watch
        # A WatchJob's error is final unless RETRYABLE; the starting RPC's is not, once the job
        # exists (its log has the truth, whatever ended the stream).
        self._watching = job_id is not None
        self._retries = retries
        self._on_reconnect = on_reconnect
        self._dropped = False
        self._closed = False
        self._failures = 0
        self.job_id: str | None = job_id
        self.last_seq: int = last_seq
        self.final: pb.JobEvent | None = None
        #: How many times the stream was resumed with WatchJob.
        self.reconnects: int = 0

    def __iter__(self) -> JobStream:
        return self

    def __next__(self) -> pb.JobEvent:
        while self.final is None and not self._closed:
            try:
                for event in self._call:
                    if event.seq <= self.last_seq:
                        continue  # already yielded (a server replaying more than asked)
                    self.job_id, self.last_seq, self._failures = event.job_id, event.seq, 0
                    if event.state in TERMINAL_STATES:
                        self.final = event
                        self._call.cancel()  # a failed job's status may follow; this says it all
                    return event
                reason = "the stream ended before the job did"
            except grpc.RpcError as err:
                if self._dropped or self._closed:
                    reason = "dropped by the client"
                else:
                    code = err.code()
                    if self.job_id is None or self._failures >= self._retries or (
                        self._watching and code not in RETRYABLE
                    ):
                        raise from_rpc_error(err) from err
                    reason = f"{code.name}: {err.details()}"
            if self._closed:
                break
            if self.job_id is None:
                raise QloradError("the stream ended before the server named a job")
            if self._dropped:
                self._dropped = False
            else:
                if self._failures >= self._retries:
                    raise QloradError(f"job {self.job_id}: {reason}, {self._failures} times")
                time.sleep(min(0.25 * 2**self._failures, 5.0))
                self._failures += 1
            self._resume(reason)
        raise StopIteration

    def _resume(self, reason: str) -> None:
        assert self.job_id is not None
        if self._on_reconnect:
            self._on_reconnect(self.job_id, self.last_seq + 1, reason)
        self.reconnects += 1
        self._watching = True
        self._call = self._watch(self.job_id, self.last_seq + 1)

    def drop(self) -> None:
        """Cancels the current stream as a lost connection would: the next next() resumes it.

        For trying out the resume (the example's --drop-after and the tests use it)."""
        self._dropped = True
        self._call.cancel()

    def close(self) -> None:
        """Stops following. The job itself goes on (CancelJob stops it)."""
        self._closed = True
        self._call.cancel()

    def result(self) -> pb.JobEvent:
        """Follows the job to its end; its final event if it SUCCEEDED, else raises JobFailed."""
        for _ in self:
            pass
        final = self.final
        if final is None:
            raise QloradError(f"job {self.job_id}: closed before it ended")
        if final.state != pb.JOB_STATE_SUCCEEDED:
            name = pb.JobState.Name(final.state).removeprefix("JOB_STATE_")
            code = code_named(final.error.code) if final.HasField("error") else (
                grpc.StatusCode.CANCELLED if final.state == pb.JOB_STATE_CANCELLED
                else grpc.StatusCode.UNKNOWN
            )
            message = final.error.message or f"job {final.job_id} ended {name}"
            raise JobFailed(message, code, final.job_id, final)
        return final

    def __enter__(self) -> JobStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self._call.cancel()
