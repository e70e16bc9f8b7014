"""Unit tests (no server) of generate and export: the requests built from keywords, the enums'
short names, and GeneratedText's pieces and result over a scripted job stream."""

import unittest

import grpc

import qlorad
from qlorad import pb

from test_stream import FakeCall


def text_event(seq, text, token_id):
    return pb.JobEvent(job_id="gen-1", seq=seq, state=pb.JOB_STATE_RUNNING,
                       generated_text=pb.GeneratedText(text=text, token_ids=[token_id]))


PIECES = ["The", "", " cap", "ital"]  # an empty piece: text held back until the next token
RESULT = pb.GenerateResult(text="The capital", finish_reason=pb.FINISH_REASON_LENGTH,
                           prompt_tokens=5, generated_tokens=4, token_ids=[11, 12, 13, 14])
LOG = [pb.JobEvent(job_id="gen-1", seq=1, state=pb.JOB_STATE_QUEUED),
       pb.JobEvent(job_id="gen-1", seq=2, state=pb.JOB_STATE_RUNNING)] + [
    text_event(3 + i, t, 11 + i) for i, t in enumerate(PIECES)] + [
    pb.JobEvent(job_id="gen-1", seq=7, state=pb.JOB_STATE_SUCCEEDED, generate_result=RESULT)]


class FakeStub:
    """The generated stub's Generate and Export: record the request, answer with `events`."""

    def __init__(self, events):
        self.events, self.sent = events, []

    def _call(self, request, metadata=None):
        self.sent.append(request)
        return FakeCall(self.events)

    Generate = Export = _call


def client_with(events):
    client = qlorad.Client(grpc.insecure_channel("127.0.0.1:1"))
    client.stub = FakeStub(events)
    return client


class RequestTest(unittest.TestCase):
    def test_generate_request_takes_chat_turns_as_pairs_dicts_or_messages(self):
        r = qlorad.generate_request(
            base_model_path="tiny", adapter_path="ad",
            messages=[("system", "Be brief."), {"role": "user", "content": "Hi"},
                      pb.ChatMessage(role="assistant", content="Hello")],
            max_new_tokens=7, temperature=0.5, top_k=3, seed=9, stop=["\n", "."],
            ignore_eos=True)
        self.assertEqual([(m.role, m.content) for m in r.messages],
                         [("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello")])
        self.assertEqual((r.base_model_path, r.adapter_path, r.prompt), ("tiny", "ad", ""))
        self.assertEqual((r.max_new_tokens, r.temperature, r.top_k, r.seed), (7, 0.5, 3, 9))
        self.assertEqual(list(r.stop), ["\n", "."])
        self.assertTrue(r.ignore_eos)
        # top_p is optional in the proto: unset unless given (0.25 is exact in binary).
        self.assertFalse(r.HasField("top_p"))
        self.assertEqual(qlorad.generate_request(base_model_path="t", prompt="x", top_p=0.25)
                         .top_p, 0.25)

    def test_a_chat_turn_with_an_unknown_key_is_refused_before_sending(self):
        with self.assertRaisesRegex(ValueError, "text"):
            qlorad.generate_request(base_model_path="t", messages=[{"role": "user", "text": "x"}])

    def test_export_enums_by_short_name_full_name_or_number(self):
        r = qlorad.export_request(base_model_path="b", output_path="o.gguf",
                                  format="gguf_lora", type="Q8_0")
        self.assertEqual((r.format, r.type), (pb.EXPORT_FORMAT_GGUF_LORA, pb.EXPORT_TYPE_Q8_0))
        r = qlorad.export_request(base_model_path="b", output_path="o",
                                  format="EXPORT_FORMAT_HF_MERGED", type=pb.EXPORT_TYPE_BF16)
        self.assertEqual((r.format, r.type), (pb.EXPORT_FORMAT_HF_MERGED, pb.EXPORT_TYPE_BF16))
        r = qlorad.export_request(base_model_path="b", output_path="o.gguf")
        self.assertEqual((r.format, r.type),
                         (pb.EXPORT_FORMAT_UNSPECIFIED, pb.EXPORT_TYPE_UNSPECIFIED))
        with self.assertRaisesRegex(ValueError, r"type: 'q5_k' is none of \[.*'q4_0'"):
            qlorad.export_request(base_model_path="b", output_path="o", type="q5_k")
        with self.assertRaisesRegex(ValueError, "format: 'onnx'"):
            qlorad.export_request(base_model_path="b", output_path="o", format="onnx")


class ClientTest(unittest.TestCase):
    def test_generate_sends_the_request_and_streams_the_job(self):
        client = client_with(LOG)
        events = list(client.generate(base_model_path="tiny", prompt="The", max_new_tokens=4))
        self.assertEqual([e.seq for e in events], list(range(1, 8)))
        (sent,) = client.stub.sent
        self.assertIsInstance(sent, pb.GenerateRequest)
        self.assertEqual((sent.base_model_path, sent.prompt, sent.max_new_tokens),
                         ("tiny", "The", 4))

    def test_generate_text_yields_the_pieces_then_keeps_the_result(self):
        client = client_with(LOG)
        text = client.generate_text(pb.GenerateRequest(base_model_path="tiny", prompt="The"))
        self.assertEqual(list(text), ["The", " cap", "ital"])
        self.assertEqual(text.result, RESULT)
        self.assertEqual(text.stream.job_id, "gen-1")

    def test_generate_text_of_a_failed_job_raises_job_failed(self):
        failed = LOG[:4] + [pb.JobEvent(
            job_id="gen-1", seq=5, state=pb.JOB_STATE_CANCELLED,
            error=pb.JobError(code="CANCELLED", message="job gen-1: cancelled"))]
        text = client_with(failed).generate_text(base_model_path="tiny", prompt="The")
        self.assertEqual(next(text), "The")
        with self.assertRaises(qlorad.JobFailed) as caught:
            next(text)
        self.assertEqual(caught.exception.code, grpc.StatusCode.CANCELLED)
        self.assertIsNone(text.result)

    def test_export_sends_the_request(self):
        done = [pb.JobEvent(job_id="ex-1", seq=1, state=pb.JOB_STATE_SUCCEEDED,
                            export_result=pb.ExportResult(output_path="o.gguf", tensors=3))]
        client = client_with(done)
        final = client.export(base_model_path="b", output_path="o.gguf", type="f16",
                              overwrite=True).result()
        self.assertEqual(final.export_result.output_path, "o.gguf")
        (sent,) = client.stub.sent
        self.assertEqual((sent.type, sent.overwrite), (pb.EXPORT_TYPE_F16, True))

    def test_a_request_and_its_fields_together_are_refused(self):
        client = client_with(LOG)
        with self.assertRaises(TypeError):
            client.generate(pb.GenerateRequest(), prompt="x")
        with self.assertRaises(TypeError):
            client.export(pb.ExportRequest(), output_path="x")
        self.assertEqual(client.stub.sent, [])


if __name__ == "__main__":
    unittest.main()
