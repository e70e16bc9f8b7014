"""One printable line per JobEvent, for command-line tools built on the client."""

from __future__ import annotations

from google.protobuf import text_format

from .v1 import qlorad_pb2 as pb


def state_name(state: int) -> str:
    """JOB_STATE_SUCCEEDED -> SUCCEEDED."""
    return pb.JobState.Name(state).removeprefix("JOB_STATE_")


def format_duration(seconds: float) -> str:
    """12345.6 -> 3:25:46."""
    s = max(0, round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def format_eval(r: pb.EvalResult) -> str:
    return (
        f"loss {r.loss:.6f}  perplexity {r.perplexity:.3f}  "
        f"token_accuracy {r.token_accuracy:.4f}  tokens {r.tokens}"
    )


def describe(event: pb.JobEvent) -> str:
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
