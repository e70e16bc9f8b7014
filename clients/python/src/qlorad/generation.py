"""Generate and Export requests from plain Python values, and a generation's text as it streams.

    for piece in client.generate_text(base_model_path="tiny", prompt="The capital of France is"):
        print(piece, end="", flush=True)

`generate_request` and `export_request` build the request messages from keywords (chat messages as
(role, content) pairs or {"role", "content"} dicts; export's format and type as the enum or a short
name such as "gguf_merged" or "q8_0"), so that a misspelt name fails before anything is sent.
`GeneratedText` turns a Generate JobStream into its text pieces and keeps the GenerateResult.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Union

from .errors import QloradError
from .stream import JobStream
from .v1 import qlorad_pb2 as pb

#: One chat turn: a ChatMessage, a (role, content) pair or a {"role": ..., "content": ...} dict.
Message = Union[pb.ChatMessage, tuple[str, str], Mapping[str, str]]


def chat_message(m: Message) -> pb.ChatMessage:
    """A ChatMessage from any of the forms of `Message`."""
    if isinstance(m, pb.ChatMessage):
        return m
    if isinstance(m, Mapping):
        unknown = set(m) - {"role", "content"}
        if unknown:
            raise ValueError(f"a chat message has role and content, not {sorted(unknown)}")
        return pb.ChatMessage(role=m.get("role", ""), content=m.get("content", ""))
    role, content = m
    return pb.ChatMessage(role=role, content=content)


def generate_request(
    *,
    base_model_path: str,
    prompt: str = "",
    messages: Iterable[Message] = (),
    adapter_path: str = "",
    max_new_tokens: int = 0,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float | None = None,
    seed: int = 0,
    stop: Iterable[str] = (),
    ignore_eos: bool = False,
    request_id: str = "",
) -> pb.GenerateRequest:
    """A GenerateRequest; 0 / None / empty leave a setting to the server's default."""
    request = pb.GenerateRequest(
        base_model_path=base_model_path, adapter_path=adapter_path, prompt=prompt,
        messages=[chat_message(m) for m in messages], max_new_tokens=max_new_tokens,
        temperature=temperature, top_k=top_k, seed=seed, stop=list(stop), ignore_eos=ignore_eos,
        request_id=request_id,
    )
    if top_p is not None:
        request.top_p = top_p
    return request


def _enum(enum, prefix: str, value: int | str, field: str) -> int:
    """An enum number from the number, the full name or the name without its prefix."""
    if isinstance(value, int):
        return value
    name = value.upper()
    try:
        return enum.Value(name if name.startswith(prefix) else prefix + name)
    except ValueError:
        known = [n.removeprefix(prefix).lower() for n in enum.keys()][1:]
        raise ValueError(f"{field}: {value!r} is none of {known}") from None


def export_request(
    *,
    base_model_path: str,
    output_path: str,
    adapter_path: str = "",
    format: int | str = pb.EXPORT_FORMAT_UNSPECIFIED,
    type: int | str = pb.EXPORT_TYPE_UNSPECIFIED,
    overwrite: bool = False,
    request_id: str = "",
) -> pb.ExportRequest:
    """An ExportRequest; format "gguf_merged" (default), "gguf_lora" or "hf_merged", type "f32",
    "f16", "bf16", "q8_0" or "q4_0" (default: F16 for GGUF, BF16 for HF_MERGED)."""
    return pb.ExportRequest(
        base_model_path=base_model_path, adapter_path=adapter_path, output_path=output_path,
        format=_enum(pb.ExportFormat, "EXPORT_FORMAT_", format, "format"),
        type=_enum(pb.ExportType, "EXPORT_TYPE_", type, "type"),
        overwrite=overwrite, request_id=request_id,
    )


class GeneratedText(Iterator[str]):
    """The text pieces of a Generate job as they come (empty pieces skipped).

    Once iterated to the end, `result` is the GenerateResult (whose text is the pieces joined);
    a job that failed or was cancelled raises JobFailed at the end instead. `close()` ends the
    call, which cancels the generation (Generate follows its call). `stream` is the JobStream.
    """

    def __init__(self, stream: JobStream):
        self.stream = stream
        self.result: pb.GenerateResult | None = None

    def __iter__(self) -> GeneratedText:
        return self

    def __next__(self) -> str:
        for event in self.stream:
            if event.HasField("generated_text") and event.generated_text.text:
                return event.generated_text.text
        if self.result is None:
            final = self.stream.result()
            if not final.HasField("generate_result"):
                raise QloradError(f"job {final.job_id}: ended without a GenerateResult")
            self.result = final.generate_result
        raise StopIteration

    def text(self) -> str:
        """The rest of the text, to the end of the generation."""
        return "".join(self)

    def close(self) -> None:
        self.stream.close()

    def __enter__(self) -> GeneratedText:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.close()
