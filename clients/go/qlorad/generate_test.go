package qlorad

// Unit tests of FollowText against scripted Generate streams (no server): the pieces as they
// come (empty ones skipped) and the result, and a cancelled generation's typed error.

import (
	"context"
	"errors"
	"reflect"
	"testing"

	pb "github.com/qlorad/qlorad/clients/go/gen/qloradv1"
)

func textEvent(seq uint64, text string, id uint32) *pb.JobEvent {
	return &pb.JobEvent{JobId: "gen-1", Seq: seq, State: pb.JobState_JOB_STATE_RUNNING,
		Payload: &pb.JobEvent_GeneratedText{GeneratedText: &pb.GeneratedText{
			Text: text, TokenIds: []uint32{id}}}}
}

// generateLog: QUEUED, RUNNING, four tokens (one held back: empty text), then the final event.
func generateLog(final *pb.JobEvent) []*pb.JobEvent {
	log := []*pb.JobEvent{
		{JobId: "gen-1", Seq: 1, State: pb.JobState_JOB_STATE_QUEUED},
		{JobId: "gen-1", Seq: 2, State: pb.JobState_JOB_STATE_RUNNING},
	}
	for i, piece := range []string{"The", "", " cap", "ital"} {
		log = append(log, textEvent(uint64(3+i), piece, uint32(11+i)))
	}
	return append(log, final)
}

func followed(t *testing.T, log []*pb.JobEvent) ([]string, *pb.GenerateResult, error) {
	t.Helper()
	w := &watchScript{}
	s, err := newJobStream(context.Background(), start(log, nil), w.watch, "", 0, 8, nil)
	if err != nil {
		t.Fatal(err)
	}
	var pieces []string
	r, err := FollowText(s, func(p string) { pieces = append(pieces, p) })
	if len(w.asked) != 0 {
		t.Fatalf("a complete stream was resumed: %v", w.asked)
	}
	return pieces, r, err
}

func TestFollowTextGivesThePiecesThenTheResult(t *testing.T) {
	want := &pb.GenerateResult{Text: "The capital", FinishReason: pb.FinishReason_FINISH_REASON_LENGTH,
		GeneratedTokens: 4, TokenIds: []uint32{11, 12, 13, 14}}
	pieces, r, err := followed(t, generateLog(&pb.JobEvent{JobId: "gen-1", Seq: 7,
		State:   pb.JobState_JOB_STATE_SUCCEEDED,
		Payload: &pb.JobEvent_GenerateResult{GenerateResult: want}}))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(pieces, []string{"The", " cap", "ital"}) {
		t.Fatalf("pieces %q", pieces)
	}
	if r != want {
		t.Fatalf("result %v, want %v", r, want)
	}
}

func TestFollowTextOfACancelledGenerationIsJobFailed(t *testing.T) {
	pieces, r, err := followed(t, generateLog(&pb.JobEvent{JobId: "gen-1", Seq: 7,
		State:   pb.JobState_JOB_STATE_CANCELLED,
		Payload: &pb.JobEvent_Error{Error: &pb.JobError{Code: "CANCELLED", Message: "cancelled"}}}))
	var failed *JobFailedError
	if r != nil || !errors.As(err, &failed) || !errors.Is(err, ErrCanceled) || failed.JobID != "gen-1" {
		t.Fatalf("result %v, error %v; want a JobFailedError with CANCELLED", r, err)
	}
	if len(pieces) != 3 {
		t.Fatalf("pieces before the end: %q", pieces)
	}
}
