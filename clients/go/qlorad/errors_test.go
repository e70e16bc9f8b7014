package qlorad

// Unit tests: every gRPC error code becomes an *Error with that code and message, matched by its
// sentinel and no other.

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The sentinel each code must match, written out by hand.
var sentinels = map[codes.Code]error{
	codes.Canceled: ErrCanceled, codes.Unknown: ErrUnknown,
	codes.InvalidArgument: ErrInvalidArgument, codes.DeadlineExceeded: ErrDeadlineExceeded,
	codes.NotFound: ErrNotFound, codes.AlreadyExists: ErrAlreadyExists,
	codes.PermissionDenied: ErrPermissionDenied, codes.ResourceExhausted: ErrResourceExhausted,
	codes.FailedPrecondition: ErrFailedPrecondition, codes.Aborted: ErrAborted,
	codes.OutOfRange: ErrOutOfRange, codes.Unimplemented: ErrUnimplemented,
	codes.Internal: ErrInternal, codes.Unavailable: ErrUnavailable, codes.DataLoss: ErrDataLoss,
	codes.Unauthenticated: ErrUnauthenticated,
}

func TestEveryCodeHasItsSentinel(t *testing.T) {
	if len(sentinels) != 16 {
		t.Fatalf("%d sentinels, want 16 (every code but OK)", len(sentinels))
	}
	for code := range sentinels {
		err := FromGRPC(status.Error(code, "why "+code.String()))
		var qerr *Error
		if !errors.As(err, &qerr) || qerr.Code != code || qerr.Message != "why "+code.String() {
			t.Fatalf("%v: got %#v", code, err)
		}
		if want := CodeName(code) + ": why " + code.String(); err.Error() != want {
			t.Errorf("%v: Error() = %q, want %q", code, err.Error(), want)
		}
		for other, s := range sentinels {
			if errors.Is(err, s) != (other == code) {
				t.Errorf("errors.Is(%v error, sentinel of %v) = %v", code, other, other != code)
			}
		}
		if CodeNamed(CodeName(code)) != code {
			t.Errorf("CodeNamed(CodeName(%v)) = %v", code, CodeNamed(CodeName(code)))
		}
		if status.Code(err) != code {
			t.Errorf("status.Code of the *Error = %v, want %v", status.Code(err), code)
		}
	}
}

func TestCodeNamesAreTheStatusNames(t *testing.T) {
	for code, want := range map[codes.Code]string{
		codes.InvalidArgument: "INVALID_ARGUMENT", codes.Canceled: "CANCELLED",
		codes.Unauthenticated: "UNAUTHENTICATED", codes.DataLoss: "DATA_LOSS",
	} {
		if got := CodeName(code); got != want {
			t.Errorf("CodeName(%v) = %q, want %q", code, got, want)
		}
	}
	if FromGRPC(nil) != nil {
		t.Error("FromGRPC(nil) is not nil")
	}
}
