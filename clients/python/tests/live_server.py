"""Tests of the installed qlorad package against a live server (tests/clients/clients_test.ts
starts one and runs this file): resuming a dropped stream, typed errors, Generate and Export.

Not a test*.py file, so `unittest discover` leaves it out: it needs QLORAD_TEST_TARGET
(host:port), QLORAD_TEST_MODEL (a Hugging Face model folder in the server's data directory) and
QLORAD_TEST_DATA_DIR (that data directory, where the tests look for Export's file);
and, for the connection options, a second server with mutual TLS and a bearer token:
QLORAD_TEST_SECURE_TARGET, QLORAD_TEST_TOKEN, QLORAD_TEST_CERTS (a folder with ca.crt,
client.crt, client.key; the server's certificate names only QLORAD_TEST_SERVER_NAME).
    QLORAD_TEST_TARGET=127.0.0.1:50051 QLORAD_TEST_MODEL=tiny ... python3 live_server.py -v
"""

import os
import unittest
from pathlib import Path

import qlorad
from qlorad import pb

TARGET = os.environ.get("QLORAD_TEST_TARGET", "")
MODEL = os.environ.get("QLORAD_TEST_MODEL", "")
DATA_DIR = Path(os.environ.get("QLORAD_TEST_DATA_DIR", ""))
SECURE_TARGET = os.environ.get("QLORAD_TEST_SECURE_TARGET", "")
TOKEN = os.environ.get("QLORAD_TEST_TOKEN", "")
CERTS = Path(os.environ.get("QLORAD_TEST_CERTS", "."))
SERVER_NAME = os.environ.get("QLORAD_TEST_SERVER_NAME", "")
# Each stream is dropped after this many events: a quantize job of the tiny model has more.
DROP_AFTER = 3


def setUpModule():
    if not all((TARGET, MODEL, str(DATA_DIR), SECURE_TARGET, TOKEN, SERVER_NAME)):
        raise RuntimeError("live_server.py needs the QLORAD_TEST_* variables of its docstring")


class LiveServerTest(unittest.TestCase):
    def setUp(self):
        self.client = qlorad.connect(TARGET)
        self.addCleanup(self.client.close)

    def quantize(self, name):
        return self.client.quantize(
            model_path=MODEL, output_path=f"python-live/{name}", overwrite=True)

    def full_log(self, job_id):
        """The job's whole log, replayed by a fresh WatchJob, as serialized events."""
        return [e.SerializeToString() for e in self.client.watch(job_id)]

    def test_watch_resumes_after_the_client_closed_its_stream(self):
        stream = self.quantize("closed")
        first = [next(stream) for _ in range(DROP_AFTER)]
        stream.close()
        job_id, last_seq = stream.job_id, stream.last_seq
        self.assertEqual(last_seq, DROP_AFTER)
        rest = list(self.client.watch(job_id, from_seq=last_seq + 1))
        events = first + rest
        self.assertEqual([e.seq for e in events], list(range(1, len(events) + 1)))
        self.assertGreater(len(rest), 1)
        self.assertEqual(events[-1].state, pb.JOB_STATE_SUCCEEDED)
        self.assertEqual([e.SerializeToString() for e in events], self.full_log(job_id))

    def test_a_dropped_stream_resumes_by_itself(self):
        told = []
        self.client.on_reconnect = lambda *args: told.append(args)
        stream = self.quantize("dropped")
        events = []
        for e in stream:
            events.append(e)
            if len(events) == DROP_AFTER:
                stream.drop()
        self.assertEqual(told, [(stream.job_id, DROP_AFTER + 1, "dropped by the client")])
        self.assertEqual(stream.reconnects, 1)
        self.assertEqual([e.seq for e in events], list(range(1, len(events) + 1)))
        self.assertGreater(len(events), DROP_AFTER + 1)
        self.assertEqual(stream.result().quantize_result.output_path, "python-live/dropped")
        self.assertEqual([e.SerializeToString() for e in events], self.full_log(stream.job_id))

    def test_a_bad_request_raises_invalid_argument_naming_the_field(self):
        with self.assertRaises(qlorad.InvalidArgument) as caught:
            next(self.client.quantize(model_path=MODEL, output_path="python-live/bad",
                                      blocksize=48))
        self.assertIn("blocksize", caught.exception.message)
        self.assertEqual(caught.exception.code.name, "INVALID_ARGUMENT")

    def test_an_unknown_job_raises_not_found(self):
        with self.assertRaises(qlorad.NotFound):
            self.client.get_job("no-such-job")
        with self.assertRaises(qlorad.NotFound):
            next(self.client.watch("no-such-job"))


class GenerateExportTest(unittest.TestCase):
    """Generate and Export of the tiny model (a Hugging Face folder the server reads as is)."""

    def setUp(self):
        self.client = qlorad.connect(TARGET)
        self.addCleanup(self.client.close)

    def test_a_greedy_generate_streams_pieces_that_make_its_text(self):
        tokens = 9
        events = list(self.client.generate(
            base_model_path=MODEL, prompt="The capital of France is", max_new_tokens=tokens,
            ignore_eos=True))
        self.assertEqual(events[-1].state, pb.JOB_STATE_SUCCEEDED)
        result = events[-1].generate_result
        pieces = [e.generated_text for e in events if e.HasField("generated_text")]
        self.assertEqual(len(pieces), tokens)
        self.assertEqual("".join(p.text for p in pieces), result.text)
        self.assertEqual([t for p in pieces for t in p.token_ids], list(result.token_ids))
        self.assertEqual(result.generated_tokens, tokens)
        self.assertEqual(result.finish_reason, pb.FINISH_REASON_LENGTH)
        self.assertEqual(self.client.get_job(events[0].job_id).kind, pb.JOB_KIND_GENERATE)
        # The text convenience on the same greedy request: the same text, piece by piece.
        text = self.client.generate_text(
            base_model_path=MODEL, prompt="The capital of France is", max_new_tokens=tokens,
            ignore_eos=True)
        self.assertEqual("".join(text), result.text)
        self.assertEqual(text.result.token_ids, result.token_ids)

    def test_an_export_of_the_model_to_gguf_f16_writes_the_file(self):
        output = "python-live/tiny-f16.gguf"
        final = self.client.export(base_model_path=MODEL, output_path=output, format="gguf_merged",
                                   type="f16", overwrite=True).result()
        r = final.export_result
        self.assertEqual((r.output_path, r.format, r.type),
                         (output, pb.EXPORT_FORMAT_GGUF_MERGED, pb.EXPORT_TYPE_F16))
        self.assertGreater(r.tensors, 0)
        written = DATA_DIR / output
        self.assertEqual(written.stat().st_size, r.bytes)
        with written.open("rb") as f:
            self.assertEqual(f.read(4), b"GGUF")
        self.assertEqual(self.client.get_job(final.job_id).kind, pb.JOB_KIND_EXPORT)

    def test_a_bad_generate_or_export_raises_invalid_argument_naming_the_field(self):
        with self.assertRaises(qlorad.InvalidArgument) as caught:
            next(self.client.generate(base_model_path=MODEL, prompt="x", top_p=1.5))
        self.assertIn("top_p", caught.exception.message)
        with self.assertRaises(qlorad.InvalidArgument) as caught:
            next(self.client.export(base_model_path=MODEL, output_path="python-live/bad.gguf",
                                    type="bf16"))
        self.assertIn("type", caught.exception.message)
        self.assertFalse((DATA_DIR / "python-live/bad.gguf").exists())


class SecureServerTest(unittest.TestCase):
    """TLS with the test CA, a client certificate, a server name override, the bearer token."""

    def connect(self, token):
        client = qlorad.connect(
            SECURE_TARGET, token=token, ca_cert=CERTS / "ca.crt",
            client_cert=CERTS / "client.crt", client_key=(CERTS / "client.key").read_bytes(),
            server_name=SERVER_NAME)
        self.addCleanup(client.close)
        return client

    def test_with_the_token_calls_reach_the_service(self):
        # NOT_FOUND comes from the handler: TLS, the client certificate and the token all passed.
        with self.assertRaises(qlorad.NotFound):
            self.connect(TOKEN).get_job("no-such-job")

    def test_without_the_token_calls_are_unauthenticated(self):
        with self.assertRaises(qlorad.Unauthenticated) as caught:
            self.connect(None).get_job("no-such-job")
        self.assertIn("bearer token", caught.exception.message)
        with self.assertRaises(qlorad.Unauthenticated):
            next(self.connect(TOKEN + "x").watch("no-such-job"))


if __name__ == "__main__":
    unittest.main()
