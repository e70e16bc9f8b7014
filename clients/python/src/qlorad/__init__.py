"""qlorad: the Python client of the qlorad QLoRA fine-tuning service (gRPC qlorad.v1).

    import qlorad
    with qlorad.connect("127.0.0.1:50051") as client:
        final = client.quantize(model_path="tiny", output_path="tiny-nf4").result()
        print(final.quantize_result.bits_per_parameter)

`pb` is the generated message module (qlorad.v1.qlorad_pb2): requests, JobEvent, enums.
"""

from .client import Client, connect
from .describe import describe, format_duration, format_eval, state_name
from .errors import (
    Aborted, AlreadyExists, Cancelled, DataLoss, DeadlineExceeded, FailedPrecondition, Internal,
    InvalidArgument, JobFailed, NotFound, OutOfRange, PermissionDenied, QloradError,
    ResourceExhausted, Unauthenticated, Unavailable, Unimplemented, Unknown, error_for,
    from_rpc_error,
)
from .generation import GeneratedText, chat_message, export_request, generate_request
from .stream import TERMINAL_STATES, JobStream
from .v1 import qlorad_pb2 as pb

__version__ = "0.1.0"

__all__ = [
    "Aborted", "AlreadyExists", "Cancelled", "Client", "DataLoss", "DeadlineExceeded",
    "FailedPrecondition", "GeneratedText", "Internal", "InvalidArgument", "JobFailed", "JobStream",
    "NotFound", "OutOfRange", "PermissionDenied", "QloradError", "ResourceExhausted",
    "TERMINAL_STATES", "Unauthenticated", "Unavailable", "Unimplemented", "Unknown",
    "chat_message", "connect", "describe", "error_for", "export_request", "format_duration",
    "format_eval", "from_rpc_error", "generate_request", "pb", "state_name",
]
