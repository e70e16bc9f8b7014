package qlorad

// Typed errors: every failed call returns an *Error carrying the gRPC status code and message,
// so callers branch with errors.Is(err, qlorad.ErrInvalidArgument) or errors.As(err, &qerr).

import (
	"context"
	"errors"
	"fmt"

	pb "github.com/qlorad/qlorad/clients/go/gen/qloradv1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is a qlorad call that ended with a non-OK gRPC status.
type Error struct {
	Code    codes.Code
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", CodeName(e.Code), e.Message) }

// Is matches a sentinel of the same code (ErrNotFound, ...): errors.Is(err, ErrNotFound).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Code == e.Code
}

// GRPCStatus lets status.FromError / status.Code read the code back.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

// Sentinels, one per error code, for errors.Is.
var (
	ErrCanceled           = &Error{Code: codes.Canceled}
	ErrUnknown            = &Error{Code: codes.Unknown}
	ErrInvalidArgument    = &Error{Code: codes.InvalidArgument}
	ErrDeadlineExceeded   = &Error{Code: codes.DeadlineExceeded}
	ErrNotFound           = &Error{Code: codes.NotFound}
	ErrAlreadyExists      = &Error{Code: codes.AlreadyExists}
	ErrPermissionDenied   = &Error{Code: codes.PermissionDenied}
	ErrResourceExhausted  = &Error{Code: codes.ResourceExhausted}
	ErrFailedPrecondition = &Error{Code: codes.FailedPrecondition}
	ErrAborted            = &Error{Code: codes.Aborted}
	ErrOutOfRange         = &Error{Code: codes.OutOfRange}
	ErrUnimplemented      = &Error{Code: codes.Unimplemented}
	ErrInternal           = &Error{Code: codes.Internal}
	ErrUnavailable        = &Error{Code: codes.Unavailable}
	ErrDataLoss           = &Error{Code: codes.DataLoss}
	ErrUnauthenticated    = &Error{Code: codes.Unauthenticated}
)

// JobFailedError is a job that ended FAILED or CANCELLED (JobStream.Result): Err has the code
// and message of its JobError (errors.Is(err, ErrNotFound) and errors.As see it), Event is the
// job's last event.
type JobFailedError struct {
	JobID string
	Err   *Error
	Event *pb.JobEvent
}

func (e *JobFailedError) Error() string { return fmt.Sprintf("job %s: %v", e.JobID, e.Err) }

// Unwrap is the *Error with the job's code.
func (e *JobFailedError) Unwrap() error { return e.Err }

// FromGRPC turns a gRPC error into an *Error (nil stays nil; an *Error is returned as is; a
// context error gets the code Canceled or DeadlineExceeded).
func FromGRPC(err error) error {
	if err == nil {
		return nil
	}
	var qerr *Error
	if errors.As(err, &qerr) {
		return qerr
	}
	switch {
	case errors.Is(err, context.Canceled):
		return &Error{Code: codes.Canceled, Message: err.Error()}
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Code: codes.DeadlineExceeded, Message: err.Error()}
	}
	s := status.Convert(err)
	return &Error{Code: s.Code(), Message: s.Message()}
}

// CodeName is the status name of a code: codes.InvalidArgument -> "INVALID_ARGUMENT".
func CodeName(c codes.Code) string {
	if name, ok := codeNames[c]; ok {
		return name
	}
	return fmt.Sprintf("CODE(%d)", uint32(c))
}

// CodeNamed is the code of a status name ("NOT_FOUND" -> codes.NotFound), Unknown for others.
func CodeNamed(name string) codes.Code {
	for c, n := range codeNames {
		if n == name {
			return c
		}
	}
	return codes.Unknown
}

var codeNames = map[codes.Code]string{
	codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
	codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
	codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED",
	codes.OutOfRange: "OUT_OF_RANGE", codes.Unimplemented: "UNIMPLEMENTED",
	codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE", codes.DataLoss: "DATA_LOSS",
	codes.Unauthenticated: "UNAUTHENTICATED",
}
