package qlorad

// One printable line per JobEvent, for command-line tools built on the client.

import (
	"fmt"
	"strings"

	pb "github.com/qlorad/qlorad/clients/go/gen/qloradv1"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// StateName turns JOB_STATE_SUCCEEDED into SUCCEEDED.
func StateName(s pb.JobState) string { return strings.TrimPrefix(s.String(), "JOB_STATE_") }

// FormatDuration: 12345.6 seconds -> 3:25:46.
func FormatDuration(seconds float64) string {
	s := int64(seconds + 0.5)
	if s < 0 {
		s = 0
	}
	return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
}

// FormatEval is an EvalResult on one line.
func FormatEval(r *pb.EvalResult) string {
	return fmt.Sprintf("loss %.6f  perplexity %.3f  token_accuracy %.4f  tokens %d",
		r.Loss, r.Perplexity, r.TokenAccuracy, r.Tokens)
}

// PayloadName is the name of the event's payload field ("progress", "train_metrics", ...), ""
// for a plain state change.
func PayloadName(ev *pb.JobEvent) string {
	if fd := payload(ev); fd != nil {
		return string(fd.Name())
	}
	return ""
}

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
			m.Step, m.TotalSteps, m.Loss, m.LearningRate, m.TokensPerSecond, FormatDuration(m.EtaSeconds))
	case *pb.JobEvent_Checkpoint:
		what := "checkpoint"
		if p.Checkpoint.IsFinal {
			what = "adapter"
		}
		return fmt.Sprintf("%s at step %d: %s", what, p.Checkpoint.Step, p.Checkpoint.Path)
	case *pb.JobEvent_EvalResult:
		return "eval " + FormatEval(p.EvalResult)
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
	return StateName(ev.State)
}
