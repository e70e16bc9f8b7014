package qlorad

// Generate and Export against the live server of live_test.go (QLORAD_TEST_TARGET,
// QLORAD_TEST_MODEL, and QLORAD_TEST_DATA_DIR, the server's data directory, where Export's file
// is looked for): a greedy generation's pieces make its text, a GGUF F16 export writes its file,
// bad requests are INVALID_ARGUMENT naming the field.

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	pb "github.com/qlorad/qlorad/clients/go/gen/qloradv1"
)

const livePrompt = "The capital of France is"

func TestLiveAGreedyGenerateStreamsPiecesThatMakeItsText(t *testing.T) {
	c, model := live(t)
	ctx := context.Background()
	const tokens = 9
	req := &pb.GenerateRequest{BaseModelPath: model, Prompt: livePrompt, MaxNewTokens: tokens,
		IgnoreEos: true}
	s, err := c.Generate(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	events := drain(t, s)
	final := events[len(events)-1]
	r := final.GetGenerateResult()
	if final.State != pb.JobState_JOB_STATE_SUCCEEDED || r == nil {
		t.Fatalf("final event %v", final)
	}
	var text strings.Builder
	var ids []uint32
	for _, ev := range events {
		if g := ev.GetGeneratedText(); g != nil {
			text.WriteString(g.Text)
			ids = append(ids, g.TokenIds...)
		}
	}
	if text.String() != r.Text || !reflect.DeepEqual(ids, r.TokenIds) || len(ids) != tokens ||
		r.GeneratedTokens != tokens || r.FinishReason != pb.FinishReason_FINISH_REASON_LENGTH {
		t.Fatalf("pieces %q (ids %v) vs result %v", text.String(), ids, r)
	}
	job, err := c.GetJob(ctx, final.JobId)
	if err != nil || job.Kind != pb.JobKind_JOB_KIND_GENERATE {
		t.Fatalf("GetJob: %v %v", job, err)
	}
	// GenerateText on the same greedy request: the same text, piece by piece.
	var pieces strings.Builder
	again, err := c.GenerateText(ctx, req, func(p string) { pieces.WriteString(p) })
	if err != nil {
		t.Fatal(err)
	}
	if pieces.String() != r.Text || !reflect.DeepEqual(again.TokenIds, r.TokenIds) {
		t.Fatalf("GenerateText %q, %v; want %q", pieces.String(), again.TokenIds, r.Text)
	}
}

func TestLiveAnExportToGgufF16WritesTheFile(t *testing.T) {
	c, model := live(t)
	dataDir := os.Getenv("QLORAD_TEST_DATA_DIR")
	if dataDir == "" {
		t.Skip("needs QLORAD_TEST_DATA_DIR (the live server's data directory)")
	}
	output := "go-live/tiny-f16.gguf"
	s, err := c.Export(context.Background(), &pb.ExportRequest{BaseModelPath: model,
		OutputPath: output, Format: pb.ExportFormat_EXPORT_FORMAT_GGUF_MERGED,
		Type: pb.ExportType_EXPORT_TYPE_F16, Overwrite: true})
	if err != nil {
		t.Fatal(err)
	}
	final, err := s.Result()
	if err != nil {
		t.Fatal(err)
	}
	r := final.GetExportResult()
	if r == nil || r.OutputPath != output || r.Type != pb.ExportType_EXPORT_TYPE_F16 || r.Tensors == 0 {
		t.Fatalf("result %v", r)
	}
	data, err := os.ReadFile(filepath.Join(dataDir, output))
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(data)) != r.Bytes || !bytes.HasPrefix(data, []byte("GGUF")) {
		t.Fatalf("%d bytes (result says %d), starting %q", len(data), r.Bytes, data[:4])
	}
}

func TestLiveABadGenerateOrExportIsInvalidArgumentNamingTheField(t *testing.T) {
	c, model := live(t)
	ctx := context.Background()
	topP := 1.5
	_, err := c.Generate(ctx, &pb.GenerateRequest{BaseModelPath: model, Prompt: "x", TopP: &topP})
	var qerr *Error
	if !errors.Is(err, ErrInvalidArgument) || !errors.As(err, &qerr) ||
		!strings.Contains(qerr.Message, "top_p") {
		t.Fatalf("Generate: %v, want INVALID_ARGUMENT naming top_p", err)
	}
	_, err = c.Export(ctx, &pb.ExportRequest{BaseModelPath: model, OutputPath: "go-live/bad.gguf",
		Type: pb.ExportType_EXPORT_TYPE_BF16})
	if !errors.Is(err, ErrInvalidArgument) || !errors.As(err, &qerr) ||
		!strings.Contains(qerr.Message, "type") {
		t.Fatalf("Export: %v, want INVALID_ARGUMENT naming type", err)
	}
}
