package main

// How the orchestrator shows a job: one line per event (training steps on one updating line on a
// terminal), and what the job ended with, on top of the qlorad package's JobStream.

import (
	"fmt"
	"io"
	"os"

	pb "github.com/qlorad/qlorad/clients/go/gen/qloradv1"
	"github.com/qlorad/qlorad/clients/go/qlorad"
)

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
		fmt.Print("\r\033[K  " + qlorad.Describe(ev))
		p.openLine = true
		return
	}
	p.Line(qlorad.Describe(ev))
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

// RunJob starts a job (start: one of the client's job methods) and follows it to its end,
// printing its events. dropAfter > 0 drops the first stream after that many events: the
// JobStream resumes it with WatchJob.
func RunJob(
	start func() (*qlorad.JobStream, error), printer *ProgressPrinter, dropAfter int,
) (*JobOutcome, error) {
	stream, err := start()
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	outcome := &JobOutcome{Latest: map[string]*pb.JobEvent{}}
	for received := 1; ; received++ {
		ev, err := stream.Recv()
		if err == io.EOF {
			return outcome, nil
		}
		if err != nil {
			return nil, err
		}
		if outcome.Final == nil {
			printer.Line("job " + ev.JobId)
		}
		printer.Event(ev)
		outcome.Final = ev
		if name := qlorad.PayloadName(ev); name != "" {
			outcome.Latest[name] = ev
		}
		if received == dropAfter && stream.Final() == nil {
			stream.Drop()
		}
	}
}
