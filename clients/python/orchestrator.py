#!/usr/bin/env python3
"""Example orchestrator: Quantize -> Train -> Evaluate (base, and base + adapter) -> a sample.

    python3 clients/python/orchestrator.py --target 127.0.0.1:50051 \\
        --model tiny-llama --data tiny-llama/train.jsonl --eval-data tiny-llama/eval.jsonl \\
        --workdir runs/demo

Paths are relative to the server's data directory. Outputs go to WORKDIR/model-nf4 (the 4-bit
base) and WORKDIR/adapter (the LoRA adapter); the sample is a greedy Generate with the trained
adapter, its text printed as it streams. Exit status: 0 when every job succeeded, 1 when
one failed or was refused, 2 for usage errors. Built on the qlorad package
(pip install ./clients/python).
"""

import argparse
import json
import os
import sys
from dataclasses import dataclass

import qlorad
from qlorad import QloradError, describe, format_eval, pb, state_name


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="127.0.0.1:50051", help="host:port of the server")
    p.add_argument("--tls", action="store_true", help="TLS with the system roots")
    p.add_argument("--ca-cert", help="TLS with this CA certificate (PEM)")
    p.add_argument("--token", default=os.environ.get("QLORAD_TOKEN"),
                   help="bearer token (default: $QLORAD_TOKEN)")
    p.add_argument("--model", required=True, help="Hugging Face checkpoint folder")
    p.add_argument("--data", required=True, help="training set (JSONL)")
    p.add_argument("--eval-data", help="evaluation set (JSONL); default: the training set")
    p.add_argument("--workdir", required=True, help="folder for the outputs")
    p.add_argument("--steps", type=int, default=10, help="optimizer steps (default 10)")
    p.add_argument("--max-seq-len", type=int, default=128, help="tokens per sequence")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quantize-only", action="store_true", help="stop after Quantize")
    p.add_argument("--sample-prompt", default="The capital of France is",
                   help="prompt of the sample generated after training")
    p.add_argument("--sample-tokens", type=int, default=16, metavar="N",
                   help="tokens of that sample at most (0: no sample)")
    p.add_argument("--drop-after", type=int, default=0, metavar="N",
                   help="drop each job's first stream after N events and resume it with WatchJob "
                        "(shows the reconnect)")
    return p.parse_args(argv)


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


def run_job(stream, printer, *, drop_after=0):
    """Follows a job (a qlorad.JobStream) to its end, printing its events; a JobOutcome.

    drop_after > 0 drops the first stream after that many events: the JobStream resumes it."""
    last, latest = None, {}
    for received, event in enumerate(stream, 1):
        if last is None:
            printer.line(f"job {event.job_id}")
        printer.event(event)
        last = event
        if event.WhichOneof("payload"):
            latest[event.WhichOneof("payload")] = event
        if received == drop_after and stream.final is None:
            stream.drop()
    return JobOutcome(last.job_id, last.state, last, latest)


@dataclass
class Row:
    """One line of the summary."""

    name: str
    outcome: JobOutcome | None  # None: the request was refused, no job exists
    detail: str = ""

    @property
    def succeeded(self):
        return self.outcome is not None and self.outcome.succeeded


def main(argv):
    args = parse_args(argv)
    quantized = f"{args.workdir}/model-nf4"
    adapter = f"{args.workdir}/adapter"
    printer = ProgressPrinter()
    summary = []

    def reconnecting(job_id, from_seq, reason):
        printer.line(
            f"stream lost ({reason}); reconnecting: WatchJob({job_id}, from_seq={from_seq})"
        )

    try:
        client = qlorad.connect(args.target, tls=args.tls, ca_cert=args.ca_cert,
                                token=args.token, on_reconnect=reconnecting)
    except QloradError as err:
        print(f"orchestrator: {err.message}", file=sys.stderr)
        return 1
    print(f"connected to {args.target}")

    def job(name, start, request):
        """Runs one job and adds its summary row; the row's outcome, if it succeeded."""
        print(f"== {name}")
        try:
            row = Row(name, run_job(start(request), printer, drop_after=args.drop_after))
        except QloradError as err:
            printer.line(f"refused: {err.code.name}: {err.message}")
            row = Row(name, None, f"refused {err.code.name}: {err.message}")
        if row.outcome and row.outcome.final.HasField("error"):
            row.detail = f"{row.outcome.final.error.code}: {row.outcome.final.error.message}"
        summary.append(row)
        return row

    def sample(name, adapter_path):
        """A greedy Generate, its text printed as it streams. Not dropped: Generate follows its
        call, so a dropped stream would cancel it."""
        print(f"== {name}")
        final = None
        try:
            for event in client.generate(base_model_path=quantized, adapter_path=adapter_path,
                                         prompt=args.sample_prompt,
                                         max_new_tokens=args.sample_tokens):
                if final is None:
                    printer.line(f"job {event.job_id}")
                    sys.stdout.write(f"  > {args.sample_prompt}")
                final = event
                if event.HasField("generated_text"):
                    sys.stdout.write(event.generated_text.text)
                    sys.stdout.flush()
            sys.stdout.write("\n")
            row = Row(name, JobOutcome(final.job_id, final.state, final, {}))
        except QloradError as err:
            printer.line(f"refused: {err.code.name}: {err.message}")
            row = Row(name, None, f"refused {err.code.name}: {err.message}")
        if row.succeeded:
            r = final.generate_result
            finish = pb.FinishReason.Name(r.finish_reason).removeprefix("FINISH_REASON_").lower()
            row.detail = f"{r.generated_tokens} tokens, {finish}: {json.dumps(r.text)}"
        elif row.outcome and final.HasField("error"):
            row.detail = f"{final.error.code}: {final.error.message}"
        summary.append(row)

    def evaluate(name, adapter_path):
        row = job(name, client.evaluate, pb.EvaluateRequest(
            base_model_path=quantized, adapter_path=adapter_path,
            dataset_path=args.eval_data or args.data, max_seq_len=args.max_seq_len))
        if row.succeeded:
            row.detail = format_eval(row.outcome.final.eval_result)

    try:
        q = job("quantize", client.quantize, pb.QuantizeRequest(
            model_path=args.model, output_path=quantized, quant_type=pb.QUANT_TYPE_NF4,
            overwrite=args.overwrite))
        if q.succeeded:
            r = q.outcome.final.quantize_result
            q.detail = f"{r.output_path} ({r.bits_per_parameter:.3f} bits/parameter)"
        if q.succeeded and not args.quantize_only:
            t = job("train", client.train, pb.TrainRequest(
                base_model_path=quantized, dataset_path=args.data,
                eval_dataset_path=args.eval_data or "", output_path=adapter,
                lora=pb.LoraConfig(r=args.lora_r),
                hyperparameters=pb.Hyperparameters(
                    max_steps=args.steps, max_seq_len=args.max_seq_len,
                    learning_rate=args.learning_rate),
                overwrite=args.overwrite))
            if t.succeeded:
                metrics = t.outcome.last("train_metrics")
                t.detail = f"adapter {adapter}"
                if metrics:
                    t.detail += f"  final loss {metrics.loss:.6f}"
            evaluate("eval-base", "")
            if t.succeeded:
                evaluate("eval-adapter", adapter)
                if args.sample_tokens > 0:
                    sample("sample", adapter)
    finally:
        client.close()

    print("summary:")
    for row in summary:
        if row.outcome:
            head = f"job {row.outcome.job_id} {state_name(row.outcome.state)}"
        else:
            head = "no job"
        print(f"  {row.name:<13}{head}  {row.detail}".rstrip())
    return 0 if all(row.succeeded for row in summary) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
