package main

// The client side of qlorad that the orchestrator needs: a connection with optional TLS and
// bearer token, following a job's event stream to its end (resuming with WatchJob when the
// stream drops), and one printable line per event.

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	pb "github.com/qlorad/qlorad/clients/go/gen/qloradv1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Client is a QLoRA stub plus the bearer token every call carries.
type Client struct {
	conn  *grpc.ClientConn
	stub  pb.QLoRAClient
	token string
}

// Connect dials target (host:port) and waits until the connection is ready. With useTLS or
// caCert (a PEM file) it speaks TLS, with the system roots or that CA; a token is sent as
// "authorization: Bearer <token>" on every call.
func Connect(
	target string, useTLS bool, caCert, token string, timeout time.Duration,
) (*Client, error) {
	transport := grpc.WithInsecure()
	if caCert != "" {
		creds, err := credentials.NewClientTLSFromFile(caCert, "")
		if err != nil {
			return nil, err
		}
		transport = grpc.WithTransportCredentials(creds)
	} else if useTLS {
		transport = grpc.WithTransportCredentials(credentials.NewClientTLSFromCert(nil, ""))
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := grpc.DialContext(ctx, target, transport, grpc.WithBlock())
	if err != nil {
		return nil, fmt.Errorf("cannot reach qlorad at %s within %v: %w", target, timeout, err)
	}
	return &Client{conn: conn, stub: pb.NewQLoRAClient(conn), token: token}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// callContext is a cancellable context carrying the token.
func (c *Client) callContext() (context.Context, context.CancelFunc) {
	ctx := context.Background()
	if c.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
	}
	return context.WithCancel(ctx)
}

// eventStream is what every job-streaming RPC returns.
type eventStream interface {
	Recv() (*pb.JobEvent, error)
}

// failedStream stands in for a stream that could not be opened.
type failedStream struct{ err error }

func (s failedStream) Recv() (*pb.JobEvent, error) { return nil, s.err }

func isTerminal(s pb.JobState) bool {
	return s == pb.JobState_JOB_STATE_SUCCEEDED || s == pb.JobState_JOB_STATE_FAILED ||
		s == pb.JobState_JOB_STATE_CANCELLED
}

// Follow runs a job-streaming RPC (start opens it) and hands each JobEvent to onEvent up to
// the final one, which it returns. A refused request (no job was created) is returned as the
// error. Once the job exists, a broken stream is resumed with WatchJob from the next seq, up to
// maxRetries times in a row with backoff; onReconnect is told before each WatchJob. dropAfter
// > 0 cancels the first stream after that many events, to exercise the reconnect.
func (c *Client) Follow(
	start startFunc,
	dropAfter int,
	onEvent func(*pb.JobEvent),
	onReconnect func(jobID string, fromSeq uint64, reason string),
) (*pb.JobEvent, error) {
	const maxRetries = 8
	ctx, cancel := c.callContext()
	defer func() { cancel() }()
	stream, err := start(ctx)
	if err != nil {
		return nil, err
	}
	jobID, lastSeq, received, failures := "", uint64(0), 0, 0
	for {
		ev, err := stream.Recv()
		var reason string
		if err == nil {
			jobID, lastSeq, failures = ev.JobId, ev.Seq, 0
			received++
			onEvent(ev)
			if isTerminal(ev.State) {
				return ev, nil // a failed job's status may follow; this event says it all
			}
			if received != dropAfter {
				continue
			}
			reason = fmt.Sprintf("dropped after %d events (--drop-after)", received)
		} else {
			if jobID == "" || failures >= maxRetries {
				return nil, err // refused before any job existed, or the server stays away
			}
			reason = "the stream ended before the job did"
			if err != io.EOF {
				s := status.Convert(err)
				reason = fmt.Sprintf("%s: %s", codeName(s.Code().String()), s.Message())
			}
			time.Sleep(backoff(failures))
			failures++
		}
		cancel()
		onReconnect(jobID, lastSeq+1, reason)
		ctx, cancel = c.callContext()
		stream, err = c.stub.WatchJob(ctx, &pb.WatchJobRequest{JobId: jobID, FromSeq: lastSeq + 1})
		if err != nil {
			stream = failedStream{err}
		}
	}
}

// backoff is the pause before retry n (0-based): 0.25 s doubling, at most 5 s.
func backoff(n int) time.Duration {
	if n >= 5 {
		return 5 * time.Second
	}
	return time.Duration(250<<n) * time.Millisecond
}

// codeName turns grpc-go's "InvalidArgument" into the status name "INVALID_ARGUMENT".
func codeName(camel string) string {
	var b strings.Builder
	for i, r := range camel {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

// stateName turns JOB_STATE_SUCCEEDED into SUCCEEDED.
func stateName(s pb.JobState) string { return strings.TrimPrefix(s.String(), "JOB_STATE_") }

// formatDuration: 12345.6 seconds -> 3:25:46.
func formatDuration(seconds float64) string {
	s := int64(seconds + 0.5)
	if s < 0 {
		s = 0
	}
	return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
}

func formatEval(r *pb.EvalResult) string {
	return fmt.Sprintf("loss %.6f  perplexity %.3f  token_accuracy %.4f  tokens %d",
		r.Loss, r.Perplexity, r.TokenAccuracy, r.Tokens)
}

// payload is the set field of the event's payload oneof, nil for a plain state change.
func payload(ev *pb.JobEvent) protoreflect.FieldDescriptor {
	m := ev.ProtoReflect()
	return m.WhichOneof(m.Descriptor().Oneofs().ByName("payload"))
}

// Describe is one line for an event: progress, metrics, results, errors.
func Describe(ev *pb.JobEvent) string {
	switch p := ev.Payload.(type) {
	case *pb.JobEvent_Progress:
		if p.Progress.Total == 0 {
			return p.Progress.Message
		}
		return fmt.Sprintf("[%3d/%d] %s", p.Progress.Index, p.Progress.Total, p.Progress.Message)
	case *pb.JobEvent_TrainMetrics:
		m := p.TrainMetrics
		return fmt.Sprintf("step %d/%d  loss %.4f  lr %.2e  %.0f tok/s  ETA %s",
			m.Step, m.TotalSteps, m.Loss, m.LearningRate, m.TokensPerSecond, formatDuration(m.EtaSeconds))
	case *pb.JobEvent_Checkpoint:
		what := "checkpoint"
		if p.Checkpoint.IsFinal {
			what = "adapter"
		}
		return fmt.Sprintf("%s at step %d: %s", what, p.Checkpoint.Step, p.Checkpoint.Path)
	case *pb.JobEvent_EvalResult:
		return "eval " + formatEval(p.EvalResult)
	case *pb.JobEvent_QuantizeResult:
		q := p.QuantizeResult
		return fmt.Sprintf("quantized %d tensors (%d parameters), kept %d; %.3f bits/parameter -> %s",
			q.TensorsQuantized, q.ParametersQuantized, q.TensorsKept, q.BitsPerParameter, q.OutputPath)
	case *pb.JobEvent_Error:
		return fmt.Sprintf("error %s: %s", p.Error.Code, p.Error.Message)
	case *pb.JobEvent_Log:
		level := strings.TrimPrefix(p.Log.Level.String(), "LOG_LEVEL_")
		return fmt.Sprintf("%s: %s", strings.ToLower(level), p.Log.Message)
	}
	if fd := payload(ev); fd != nil { // a payload this client does not format: show its fields
		text := prototext.MarshalOptions{}.Format(ev.ProtoReflect().Get(fd).Message().Interface())
		return fmt.Sprintf("%s: %s", fd.Name(), strings.Join(strings.Fields(text), " "))
	}
	return stateName(ev.State)
}

// ProgressPrinter prints events one line each, or, on a terminal, training steps on one
// updating line.
type ProgressPrinter struct {
	live, openLine bool
}

// NewProgressPrinter prints to stdout.
func NewProgressPrinter() *ProgressPrinter {
	info, err := os.Stdout.Stat()
	return &ProgressPrinter{live: err == nil && info.Mode()&os.ModeCharDevice != 0}
}

// Event prints one event.
func (p *ProgressPrinter) Event(ev *pb.JobEvent) {
	if _, ok := ev.Payload.(*pb.JobEvent_TrainMetrics); ok && p.live {
		fmt.Print("\r\033[K  " + Describe(ev))
		p.openLine = true
		return
	}
	p.Line(Describe(ev))
}

// Line prints one line, after ending an updating one.
func (p *ProgressPrinter) Line(text string) {
	if p.openLine {
		fmt.Println()
		p.openLine = false
	}
	fmt.Println("  " + text)
}

// JobOutcome is what a followed job ended with.
type JobOutcome struct {
	Final *pb.JobEvent
	// The last event of each payload kind ("train_metrics", "checkpoint", ...).
	Latest map[string]*pb.JobEvent
}

// Succeeded says whether the job ended SUCCEEDED.
func (o *JobOutcome) Succeeded() bool { return o.Final.State == pb.JobState_JOB_STATE_SUCCEEDED }

// startFunc opens a job-streaming RPC.
type startFunc = func(context.Context) (eventStream, error)

// RunJob follows a job to its end, printing its events.
func RunJob(
	c *Client, start startFunc, printer *ProgressPrinter, dropAfter int,
) (*JobOutcome, error) {
	outcome := &JobOutcome{Latest: map[string]*pb.JobEvent{}}
	onEvent := func(ev *pb.JobEvent) {
		if outcome.Final == nil {
			printer.Line("job " + ev.JobId)
		}
		printer.Event(ev)
		outcome.Final = ev
		if fd := payload(ev); fd != nil {
			outcome.Latest[string(fd.Name())] = ev
		}
	}
	onReconnect := func(jobID string, fromSeq uint64, reason string) {
		printer.Line(fmt.Sprintf("stream lost (%s); reconnecting: WatchJob(%s, from_seq=%d)",
			reason, jobID, fromSeq))
	}
	if _, err := c.Follow(start, dropAfter, onEvent, onReconnect); err != nil {
		return nil, err
	}
	return outcome, nil
}
