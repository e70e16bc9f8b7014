"""Unit tests: every gRPC status code maps to its own QloradError subclass, with code and message."""

import unittest

import grpc

import qlorad


class FakeRpcError(grpc.RpcError):
    """What a failed grpc call raises: an RpcError that is also a Call (code, details)."""

    def __init__(self, code, details):
        super().__init__()
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


# The class each code must map to, written out by hand from grpc.StatusCode's names.
EXPECTED = {
    "CANCELLED": qlorad.Cancelled,
    "UNKNOWN": qlorad.Unknown,
    "INVALID_ARGUMENT": qlorad.InvalidArgument,
    "DEADLINE_EXCEEDED": qlorad.DeadlineExceeded,
    "NOT_FOUND": qlorad.NotFound,
    "ALREADY_EXISTS": qlorad.AlreadyExists,
    "PERMISSION_DENIED": qlorad.PermissionDenied,
    "RESOURCE_EXHAUSTED": qlorad.ResourceExhausted,
    "FAILED_PRECONDITION": qlorad.FailedPrecondition,
    "ABORTED": qlorad.Aborted,
    "OUT_OF_RANGE": qlorad.OutOfRange,
    "UNIMPLEMENTED": qlorad.Unimplemented,
    "INTERNAL": qlorad.Internal,
    "UNAVAILABLE": qlorad.Unavailable,
    "DATA_LOSS": qlorad.DataLoss,
    "UNAUTHENTICATED": qlorad.Unauthenticated,
}


class ErrorMappingTest(unittest.TestCase):
    def test_every_error_code_has_its_class(self):
        codes = [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK]
        self.assertEqual(sorted(c.name for c in codes), sorted(EXPECTED))
        for code in codes:
            err = qlorad.from_rpc_error(FakeRpcError(code, f"why {code.name}"))
            self.assertIs(type(err), EXPECTED[code.name], code)
            self.assertIsInstance(err, qlorad.QloradError)
            self.assertIs(err.code, code)
            self.assertEqual(err.message, f"why {code.name}")
            self.assertEqual(str(err), f"{code.name}: why {code.name}")

    def test_a_class_raised_by_hand_carries_its_code(self):
        err = qlorad.NotFound("job x: not found")
        self.assertIs(err.code, grpc.StatusCode.NOT_FOUND)
        self.assertEqual(err.message, "job x: not found")


if __name__ == "__main__":
    unittest.main()
