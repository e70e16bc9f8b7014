"""Typed exceptions for qlorad calls: one class per gRPC status code, all under QloradError.

    try:
        client.get_job("nope")
    except qlorad.NotFound as err:
        print(err.code, err.message)      # StatusCode.NOT_FOUND, "job nope: not found"

A refused request (INVALID_ARGUMENT naming the field, NOT_FOUND naming the file, ...) raises the
class of its code; JobFailed is raised by JobStream.result() for a job that ended FAILED or
CANCELLED, with the code and message of its JobError.
"""

from __future__ import annotations

import grpc


class QloradError(Exception):
    """A qlorad call ended with a non-OK status: `code` (grpc.StatusCode) and `message`."""

    #: The status code this class stands for; QloradError itself is used for codes without one.
    status_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        self.code: grpc.StatusCode = code if code is not None else self.status_code
        self.message: str = message
        super().__init__(f"{self.code.name}: {message}")


class Cancelled(QloradError):
    status_code = grpc.StatusCode.CANCELLED


class Unknown(QloradError):
    status_code = grpc.StatusCode.UNKNOWN


class InvalidArgument(QloradError):
    status_code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(QloradError):
    status_code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(QloradError):
    status_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(QloradError):
    status_code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(QloradError):
    status_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(QloradError):
    status_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(QloradError):
    status_code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(QloradError):
    status_code = grpc.StatusCode.ABORTED


class OutOfRange(QloradError):
    status_code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(QloradError):
    status_code = grpc.StatusCode.UNIMPLEMENTED


class Internal(QloradError):
    status_code = grpc.StatusCode.INTERNAL


class Unavailable(QloradError):
    status_code = grpc.StatusCode.UNAVAILABLE


class DataLoss(QloradError):
    status_code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(QloradError):
    status_code = grpc.StatusCode.UNAUTHENTICATED


class JobFailed(QloradError):
    """A job ended FAILED or CANCELLED; `event` is its last event (with the JobError)."""

    def __init__(self, message: str, code: grpc.StatusCode, job_id: str, event):
        super().__init__(message, code)
        self.job_id = job_id
        self.event = event


_BY_CODE: dict[grpc.StatusCode, type[QloradError]] = {
    cls.status_code: cls
    for cls in (
        Cancelled, Unknown, InvalidArgument, DeadlineExceeded, NotFound, AlreadyExists,
        PermissionDenied, ResourceExhausted, FailedPrecondition, Aborted, OutOfRange,
        Unimplemented, Internal, Unavailable, DataLoss, Unauthenticated,
    )
}


def error_for(code: grpc.StatusCode, message: str) -> QloradError:
    """The exception of the class for `code` (QloradError for a code without one)."""
    return _BY_CODE.get(code, QloradError)(message, code)


def code_named(name: str) -> grpc.StatusCode:
    """"INVALID_ARGUMENT" -> grpc.StatusCode.INVALID_ARGUMENT (UNKNOWN for other names)."""
    return grpc.StatusCode.__members__.get(name, grpc.StatusCode.UNKNOWN)


def from_rpc_error(err: grpc.RpcError) -> QloradError:
    """The typed exception for a failed gRPC call (err is also a grpc.Call)."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    return error_for(code or grpc.StatusCode.UNKNOWN, details or "")
