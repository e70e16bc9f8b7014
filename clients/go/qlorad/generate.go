package qlorad

// Generate and Export: the two job RPCs that come after training (trying the model out, taking
// it to llama.cpp or Hugging Face), and FollowText, which turns a Generate stream into its text.

import (
	"context"
	"fmt"
	"io"

	pb "github.com/qlorad/qlorad/clients/go/gen/qloradv1"
	"google.golang.org/grpc/codes"
)

// Generate generates text from a prompt or chat messages with a base model (and optionally an
// adapter): a GeneratedText event per token, then the SUCCEEDED event with the GenerateResult.
// Unlike other jobs the generation follows its call: Close (or ctx's end) cancels it, so a
// dropped stream is not worth resuming. A refused request is the error.
func (c *Client) Generate(ctx context.Context, req *pb.GenerateRequest) (*JobStream, error) {
	return c.StartJob(ctx, func(ctx context.Context) (EventStream, error) {
		return c.Stub.Generate(ctx, req)
	})
}

// GenerateText is Generate followed by FollowText: onText gets each piece of text as it comes,
// the result is the GenerateResult (its Text is the pieces joined).
func (c *Client) GenerateText(
	ctx context.Context, req *pb.GenerateRequest, onText func(piece string),
) (*pb.GenerateResult, error) {
	s, err := c.Generate(ctx, req)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return FollowText(s, onText)
}

// FollowText follows a Generate stream to its end, calling onText (if not nil) with each
// non-empty piece of text; the GenerateResult, or a *JobFailedError for a job that failed or was
// cancelled.
func FollowText(s *JobStream, onText func(piece string)) (*pb.GenerateResult, error) {
	for {
		ev, err := s.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if t := ev.GetGeneratedText(); t != nil && t.Text != "" && onText != nil {
			onText(t.Text)
		}
	}
	final, err := s.Result()
	if err != nil {
		return nil, err
	}
	r := final.GetGenerateResult()
	if r == nil {
		return nil, &Error{Code: codes.Internal,
			Message: fmt.Sprintf("job %s: ended without a GenerateResult", final.JobId)}
	}
	return r, nil
}

// Export writes a base model, or a base plus an adapter, as one GGUF file (merged, or the adapter
// as a GGUF LoRA) or a merged Hugging Face folder: a Progress event per tensor, then the
// SUCCEEDED event with the ExportResult. A refused request is the error.
func (c *Client) Export(ctx context.Context, req *pb.ExportRequest) (*JobStream, error) {
	return c.StartJob(ctx, func(ctx context.Context) (EventStream, error) {
		return c.Stub.Export(ctx, req)
	})
}
