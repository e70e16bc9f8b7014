package qlorad

// Unit tests of JobStream against scripted streams (no server): resume from the last seq, typed
// errors, which WatchJob errors are retried, Result's JobFailedError.

import (
	"context"
	"errors"
	"io"
	"reflect"
	"testing"

	pb "github.com/qlorad/qlorad/clients/go/gen/qloradv1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func event(seq uint64, state pb.JobState) *pb.JobEvent {
	return &pb.JobEvent{JobId: "job-1", Seq: seq, State: state,
		Payload: &pb.JobEvent_Progress{Progress: &pb.Progress{Index: uint32(seq), Total: 9}}}
}

// jobLog is a job's log of 7 events: QUEUED, RUNNING x5, SUCCEEDED.
func jobLog() []*pb.JobEvent {
	log := []*pb.JobEvent{event(1, pb.JobState_JOB_STATE_QUEUED)}
	for s := uint64(2); s < 7; s++ {
		log = append(log, event(s, pb.JobState_JOB_STATE_RUNNING))
	}
	return append(log, event(7, pb.JobState_JOB_STATE_SUCCEEDED))
}

// scripted yields events, then err (io.EOF when nil); once its context is cancelled it fails
// with Canceled, as a grpc stream does.
type scripted struct {
	ctx    context.Context
	events []*pb.JobEvent
	err    error
}

func (s *scripted) Recv() (*pb.JobEvent, error) {
	if s.ctx.Err() != nil {
		return nil, status.Error(codes.Canceled, "context canceled")
	}
	if len(s.events) == 0 {
		if s.err == nil {
			return nil, io.EOF
		}
		return nil, s.err
	}
	ev := s.events[0]
	s.events = s.events[1:]
	return ev, nil
}

func start(events []*pb.JobEvent, err error) StartFunc {
	return func(ctx context.Context) (EventStream, error) { return &scripted{ctx, events, err}, nil }
}

// watchScript answers each WatchJob with the next script and records the (job, from_seq) asked.
type watchScript struct {
	answers []*scripted
	asked   [][2]interface{}
}

func (w *watchScript) watch(ctx context.Context, jobID string, fromSeq uint64) (EventStream, error) {
	w.asked = append(w.asked, [2]interface{}{jobID, fromSeq})
	a := w.answers[0]
	w.answers = w.answers[1:]
	a.ctx = ctx
	return a, nil
}

func seqs(t *testing.T, s *JobStream, each func(ev *pb.JobEvent)) []uint64 {
	t.Helper()
	var got []uint64
	for {
		ev, err := s.Recv()
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatalf("Recv after seq %v: %v", got, err)
		}
		got = append(got, ev.Seq)
		if each != nil {
			each(ev)
		}
	}
}

var all = []uint64{1, 2, 3, 4, 5, 6, 7}

func TestABrokenStreamResumesAfterTheLastSeq(t *testing.T) {
	log := jobLog()
	// WatchJob may replay an event the client already has: it is skipped, not repeated.
	w := &watchScript{answers: []*scripted{{events: log[2:]}}}
	var told []string
	s, err := newJobStream(context.Background(), start(log[:3], status.Error(codes.Unavailable, "reset")),
		w.watch, "", 0, 8, func(job string, from uint64, reason string) { told = append(told, reason) })
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(t, s, nil); !reflect.DeepEqual(got, all) {
		t.Fatalf("seqs %v, want %v", got, all)
	}
	if !reflect.DeepEqual(w.asked, [][2]interface{}{{"job-1", uint64(4)}}) {
		t.Errorf("WatchJob calls %v", w.asked)
	}
	if !reflect.DeepEqual(told, []string{"UNAVAILABLE: reset"}) || s.Reconnects() != 1 {
		t.Errorf("reconnects %d, told %v", s.Reconnects(), told)
	}
	if s.Final().Seq != 7 {
		t.Errorf("Final seq %d", s.Final().Seq)
	}
}

func TestDropResumesFromTheNextSeq(t *testing.T) {
	log := jobLog()
	w := &watchScript{answers: []*scripted{{events: log[4:]}}}
	s, err := newJobStream(context.Background(), start(log, nil), w.watch, "", 0, 8, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := seqs(t, s, func(ev *pb.JobEvent) {
		if ev.Seq == 4 {
			s.Drop()
		}
	})
	if !reflect.DeepEqual(got, all) || !reflect.DeepEqual(w.asked, [][2]interface{}{{"job-1", uint64(5)}}) {
		t.Fatalf("seqs %v, WatchJob calls %v", got, w.asked)
	}
}

func TestARefusedRequestIsTheTypedError(t *testing.T) {
	_, err := newJobStream(context.Background(),
		start(nil, status.Error(codes.InvalidArgument, "blocksize: 48")), nil, "", 0, 8, nil)
	var qerr *Error
	if !errors.Is(err, ErrInvalidArgument) || !errors.As(err, &qerr) || qerr.Message != "blocksize: 48" {
		t.Fatalf("got %v", err)
	}
}

func TestAFinalWatchErrorIsNotRetried(t *testing.T) {
	log := jobLog()
	w := &watchScript{answers: []*scripted{{err: status.Error(codes.NotFound, "job-1?")}}}
	s, err := newJobStream(context.Background(), start(log[:2], status.Error(codes.Unavailable, "gone")),
		w.watch, "", 0, 8, nil)
	if err != nil {
		t.Fatal(err)
	}
	for want := uint64(1); want <= 2; want++ {
		if ev, err := s.Recv(); err != nil || ev.Seq != want {
			t.Fatalf("Recv: %v, %v; want seq %d", ev, err, want)
		}
	}
	if _, err := s.Recv(); !errors.Is(err, ErrNotFound) {
		t.Fatalf("got %v, want NOT_FOUND", err)
	}
	if len(w.asked) != 1 {
		t.Errorf("WatchJob calls %v", w.asked)
	}
}

func TestResultIsJobFailedWithTheJobsCode(t *testing.T) {
	failed := &pb.JobEvent{JobId: "job-1", Seq: 3, State: pb.JobState_JOB_STATE_FAILED,
		Payload: &pb.JobEvent_Error{Error: &pb.JobError{Code: "NOT_FOUND", Message: "model.safetensors"}}}
	s, err := newJobStream(context.Background(), start(append(jobLog()[:2], failed), nil), nil, "", 0, 8, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Result()
	var jf *JobFailedError
	if !errors.As(err, &jf) || jf.JobID != "job-1" || jf.Err.Message != "model.safetensors" ||
		!errors.Is(err, ErrNotFound) {
		t.Fatalf("got %#v", err)
	}
}
