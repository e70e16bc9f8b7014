"""Unit tests of JobStream against scripted calls (no server): resume from the last seq, typed
errors, which WatchJob errors are retried."""

import unittest

import grpc

import qlorad
from qlorad import pb

from test_errors import FakeRpcError


def event(seq, state=pb.JOB_STATE_RUNNING, job_id="job-1"):
    return pb.JobEvent(job_id=job_id, seq=seq, state=state,
                       progress=pb.Progress(index=seq, total=9, message=f"tensor {seq}"))


class FakeCall:
    """A streaming call: yields `events`, then raises `error` (if any); records cancel().

    Like grpc's call objects it is its own iterator: a new `for` goes on where the last stopped.
    """

    def __init__(self, events, error=None):
        self.events, self.error, self.cancelled = list(events), error, False

    def __iter__(self):
        return self

    def __next__(self):
        if self.cancelled:
            raise FakeRpcError(grpc.StatusCode.CANCELLED, "Locally cancelled by application!")
        if self.events:
            return self.events.pop(0)
        if self.error:
            raise self.error
        raise StopIteration

    def cancel(self):
        self.cancelled = True


class ScriptedWatch:
    """WatchJob: answers each call with the next scripted call; records (job_id, from_seq)."""

    def __init__(self, *calls):
        self.calls, self.asked = list(calls), []

    def __call__(self, job_id, from_seq):
        self.asked.append((job_id, from_seq))
        return self.calls.pop(0)


# A job's log of 7 events: QUEUED, RUNNING, 4 progress, SUCCEEDED.
LOG = [event(1, pb.JOB_STATE_QUEUED)] + [event(s) for s in range(2, 7)] + [
    event(7, pb.JOB_STATE_SUCCEEDED)]


class JobStreamTest(unittest.TestCase):
    def test_a_broken_stream_resumes_after_the_last_seq(self):
        start = FakeCall(LOG[:3], FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection reset"))
        # WatchJob may replay an event the client already has: it is skipped, not repeated.
        watch = ScriptedWatch(FakeCall(LOG[2:]))
        told = []
        stream = qlorad.JobStream(lambda: start, watch, on_reconnect=lambda *a: told.append(a))
        got = [e.seq for e in stream]
        self.assertEqual(got, [1, 2, 3, 4, 5, 6, 7])
        self.assertEqual(watch.asked, [("job-1", 4)])
        self.assertEqual(told, [("job-1", 4, "UNAVAILABLE: connection reset")])
        self.assertEqual(stream.reconnects, 1)
        self.assertEqual(stream.final.seq, 7)

    def test_drop_resumes_from_the_next_seq(self):
        start = FakeCall(LOG)
        watch = ScriptedWatch(FakeCall(LOG[4:]))
        stream = qlorad.JobStream(lambda: start, watch)
        got = []
        for e in stream:
            got.append(e.seq)
            if e.seq == 4:
                stream.drop()
        self.assertTrue(start.cancelled)
        self.assertEqual(got, [1, 2, 3, 4, 5, 6, 7])
        self.assertEqual(watch.asked, [("job-1", 5)])

    def test_a_refused_request_raises_its_typed_error(self):
        start = FakeCall([], FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "blocksize: 3 is odd"))
        stream = qlorad.JobStream(lambda: start, ScriptedWatch())
        with self.assertRaises(qlorad.InvalidArgument) as caught:
            next(stream)
        self.assertEqual(caught.exception.message, "blocksize: 3 is odd")

    def test_a_final_watch_error_is_not_retried(self):
        watch = ScriptedWatch(FakeCall([], FakeRpcError(grpc.StatusCode.NOT_FOUND, "job-1?")))
        start = FakeCall(LOG[:2], FakeRpcError(grpc.StatusCode.UNAVAILABLE, "gone"))
        stream = qlorad.JobStream(lambda: start, watch)
        self.assertEqual([next(stream).seq, next(stream).seq], [1, 2])
        with self.assertRaises(qlorad.NotFound):
            next(stream)
        self.assertEqual(watch.asked, [("job-1", 3)])

    def test_result_raises_job_failed_with_the_jobs_code(self):
        failed = pb.JobEvent(job_id="job-1", seq=3, state=pb.JOB_STATE_FAILED,
                             error=pb.JobError(code="NOT_FOUND", message="model.safetensors"))
        stream = qlorad.JobStream(lambda: FakeCall(LOG[:2] + [failed]), ScriptedWatch())
        with self.assertRaises(qlorad.JobFailed) as caught:
            stream.result()
        self.assertIs(caught.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertEqual(caught.exception.message, "model.safetensors")
        self.assertEqual(caught.exception.job_id, "job-1")


if __name__ == "__main__":
    unittest.main()
