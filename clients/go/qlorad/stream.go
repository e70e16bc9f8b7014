package qlorad

// JobStream: the events of one job, followed to its end across dropped streams. Jobs outlive
// streams; a job's log is append-only (seq 1, 2, 3, ... with no gaps), so when a stream breaks
// JobStream resumes with WatchJob(job_id, from_seq = last seq + 1): Recv returns each event of
// the job exactly once, in order, the last one with a final state, then io.EOF.

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	pb "github.com/qlorad/qlorad/clients/go/gen/qloradv1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// EventStream is what a job-streaming RPC of the stub returns.
type EventStream interface {
	Recv() (*pb.JobEvent, error)
}

// StartFunc opens a job-streaming RPC with ctx (the stub's Quantize, Train, ... bound to a
// request). Client.StartJob takes one: the extension point for job RPCs added later.
type StartFunc func(ctx context.Context) (EventStream, error)

// WatchFunc opens WatchJob(jobID, fromSeq).
type WatchFunc func(ctx context.Context, jobID string, fromSeq uint64) (EventStream, error)

// ReconnectFunc is told before each WatchJob that resumes a dropped stream.
type ReconnectFunc func(jobID string, fromSeq uint64, reason string)

// IsTerminal says whether a state is final: SUCCEEDED, FAILED or CANCELLED.
func IsTerminal(s pb.JobState) bool {
	return s == pb.JobState_JOB_STATE_SUCCEEDED || s == pb.JobState_JOB_STATE_FAILED ||
		s == pb.JobState_JOB_STATE_CANCELLED
}

// retryable: codes after which a WatchJob is worth trying again (the server or the network went
// away for a while). Others (NotFound, Unauthenticated, ...) do not change by retrying.
func retryable(c codes.Code) bool {
	switch c {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted, codes.Internal, codes.Unknown,
		codes.Canceled:
		return true
	}
	return false
}

// JobStream follows one job. Not safe for concurrent Recv; Drop and Close may be called from
// another goroutine.
type JobStream struct {
	parent      context.Context
	watch       WatchFunc
	retries     int
	onReconnect ReconnectFunc

	mu      sync.Mutex
	cancel  context.CancelFunc
	dropped bool
	closed  bool

	stream   EventStream
	watching bool // the current stream is a WatchJob: only retryable errors are retried
	failures int
	pending  *pb.JobEvent // the first event, read ahead by the constructor

	jobID      string
	lastSeq    uint64
	final      *pb.JobEvent
	reconnects int
}

func newJobStream(
	parent context.Context, start StartFunc, watch WatchFunc, jobID string, lastSeq uint64,
	retries int, onReconnect ReconnectFunc,
) (*JobStream, error) {
	s := &JobStream{
		parent: parent, watch: watch, retries: retries, onReconnect: onReconnect,
		jobID: jobID, lastSeq: lastSeq, watching: jobID != "",
	}
	ctx, cancel := context.WithCancel(parent)
	s.cancel = cancel
	stream, err := start(ctx)
	if err != nil {
		cancel()
		return nil, FromGRPC(err)
	}
	s.stream = stream
	// Read the first event now: a refused request is the constructor's error, not Recv's.
	ev, err := s.Recv()
	if err != nil {
		s.Close()
		if err == io.EOF {
			return nil, &Error{Code: codes.Internal, Message: "the stream ended without an event"}
		}
		return nil, err
	}
	s.pending = ev
	return s, nil
}

// JobID is the job's id (known once the first event arrived).
func (s *JobStream) JobID() string { return s.jobID }

// LastSeq is the seq of the last event Recv returned (or read ahead).
func (s *JobStream) LastSeq() uint64 { return s.lastSeq }

// Final is the job's last event, nil until Recv returned it.
func (s *JobStream) Final() *pb.JobEvent { return s.final }

// Reconnects counts the WatchJob calls that resumed a dropped stream.
func (s *JobStream) Reconnects() int { return s.reconnects }

// Recv returns the job's next event; io.EOF after the final one (or after Close). A refused
// request, a WatchJob error that retrying cannot fix, or too many failures in a row end it with
// an *Error.
func (s *JobStream) Recv() (*pb.JobEvent, error) {
	if ev := s.pending; ev != nil {
		s.pending = nil
		return ev, nil
	}
	for s.final == nil && !s.isClosed() {
		ev, err := s.stream.Recv()
		var reason string
		if err == nil {
			if ev.Seq <= s.lastSeq {
				continue // already returned (a server replaying more than asked)
			}
			s.jobID, s.lastSeq, s.failures = ev.JobId, ev.Seq, 0
			if IsTerminal(ev.State) {
				s.final = ev
				s.cancelCurrent() // a failed job's status may follow; this event says it all
			}
			return ev, nil
		}
		dropped := s.takeDropped()
		switch {
		case s.isClosed():
			return nil, io.EOF
		case dropped:
			reason = "dropped by the client"
		case s.parent.Err() != nil:
			return nil, FromGRPC(s.parent.Err())
		case err == io.EOF:
			reason = "the stream ended before the job did"
		default:
			code := status.Code(err)
			if s.jobID == "" || s.failures >= s.retries || (s.watching && !retryable(code)) {
				return nil, FromGRPC(err)
			}
			reason = fmt.Sprintf("%s: %s", CodeName(code), status.Convert(err).Message())
		}
		if s.jobID == "" {
			return nil, &Error{Code: codes.Internal, Message: "the stream ended before the server named a job"}
		}
		if !dropped {
			if s.failures >= s.retries {
				return nil, &Error{Code: codes.Unavailable,
					Message: fmt.Sprintf("job %s: %s, %d times", s.jobID, reason, s.failures)}
			}
			time.Sleep(backoff(s.failures))
			s.failures++
		}
		s.resume(reason)
	}
	return nil, io.EOF
}

func (s *JobStream) resume(reason string) {
	if s.onReconnect != nil {
		s.onReconnect(s.jobID, s.lastSeq+1, reason)
	}
	s.reconnects++
	s.watching = true
	s.mu.Lock()
	s.cancel()
	ctx, cancel := context.WithCancel(s.parent)
	s.cancel = cancel
	s.mu.Unlock()
	stream, err := s.watch(ctx, s.jobID, s.lastSeq+1)
	if err != nil {
		stream = failedStream{err}
	}
	s.stream = stream
}

// failedStream stands in for a stream that could not be opened.
type failedStream struct{ err error }

func (f failedStream) Recv() (*pb.JobEvent, error) { return nil, f.err }

// backoff is the pause before retry n (0-based): 0.25 s doubling, at most 5 s.
func backoff(n int) time.Duration {
	if n >= 5 {
		return 5 * time.Second
	}
	return time.Duration(250<<n) * time.Millisecond
}

func (s *JobStream) cancelCurrent() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cancel()
}

func (s *JobStream) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *JobStream) takeDropped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.dropped
	s.dropped = false
	return d
}

// Drop cancels the current stream as a lost connection would; the next Recv resumes it with
// WatchJob. For trying out the resume (the example's --drop-after and the tests use it).
func (s *JobStream) Drop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropped = true
	s.cancel()
}

// Close stops following; Recv then returns io.EOF. The job itself goes on (CancelJob stops it).
func (s *JobStream) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.cancel()
}

// Result follows the job to its end: its final event if it SUCCEEDED, else a *JobFailedError
// with the code and message of its JobError.
func (s *JobStream) Result() (*pb.JobEvent, error) {
	for {
		_, err := s.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	f := s.final
	if f == nil {
		return nil, &Error{Code: codes.Canceled, Message: fmt.Sprintf("job %s: closed before it ended", s.jobID)}
	}
	if f.State == pb.JobState_JOB_STATE_SUCCEEDED {
		return f, nil
	}
	e := &Error{Code: codes.Unknown, Message: "ended " + StateName(f.State)}
	if f.State == pb.JobState_JOB_STATE_CANCELLED {
		e.Code = codes.Canceled
	}
	if je := f.GetError(); je != nil {
		e.Code = CodeNamed(je.Code)
		if je.Message != "" {
			e.Message = je.Message
		}
	}
	return nil, &JobFailedError{JobID: f.JobId, Err: e, Event: f}
}
