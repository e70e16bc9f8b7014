// Command orchestrator is the example qlorad client (on the package
// github.com/qlorad/qlorad/clients/go/qlorad): Quantize -> Train -> Evaluate (base, and
// base + adapter) -> a sample, with live progress, resuming a dropped stream with WatchJob.
//
//	orchestrator --target 127.0.0.1:50051 --model tiny-llama --data tiny-llama/train.jsonl \
//	    --eval-data tiny-llama/eval.jsonl --workdir runs/demo
//
// Paths are relative to the server's data directory. Outputs go to WORKDIR/model-nf4 (the 4-bit
// base) and WORKDIR/adapter (the LoRA adapter); the sample is a greedy Generate with the trained
// adapter, its text printed as it streams. Exit status: 0 when every job succeeded, 1 when
// one failed or was refused, 2 for usage errors.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	pb "github.com/qlorad/qlorad/clients/go/gen/qloradv1"
	"github.com/qlorad/qlorad/clients/go/qlorad"
)

type options struct {
	target, caCert, token              string
	useTLS, overwrite, quantizeOnly    bool
	model, data, evalData, workdir     string
	steps, maxSeqLen, loraR, dropAfter int
	learningRate                       float64
	samplePrompt                       string
	sampleTokens                       int
}

func parseFlags() options {
	var o options
	flag.StringVar(&o.target, "target", "127.0.0.1:50051", "host:port of the server")
	flag.BoolVar(&o.useTLS, "tls", false, "TLS with the system roots")
	flag.StringVar(&o.caCert, "ca-cert", "", "TLS with this CA certificate (PEM)")
	flag.StringVar(&o.token, "token", os.Getenv("QLORAD_TOKEN"),
		"bearer token (default: $QLORAD_TOKEN)")
	flag.StringVar(&o.model, "model", "", "Hugging Face checkpoint folder (required)")
	flag.StringVar(&o.data, "data", "", "training set, JSONL (required)")
	flag.StringVar(&o.evalData, "eval-data", "", "evaluation set, JSONL; default: the training set")
	flag.StringVar(&o.workdir, "workdir", "", "folder for the outputs (required)")
	flag.IntVar(&o.steps, "steps", 10, "optimizer steps")
	flag.IntVar(&o.maxSeqLen, "max-seq-len", 128, "tokens per sequence")
	flag.Float64Var(&o.learningRate, "learning-rate", 1e-3, "peak learning rate")
	flag.IntVar(&o.loraR, "lora-r", 8, "LoRA rank")
	flag.BoolVar(&o.overwrite, "overwrite", false, "replace existing outputs")
	flag.BoolVar(&o.quantizeOnly, "quantize-only", false, "stop after Quantize")
	flag.StringVar(&o.samplePrompt, "sample-prompt", "The capital of France is",
		"prompt of the sample generated after training")
	flag.IntVar(&o.sampleTokens, "sample-tokens", 16, "tokens of that sample at most (0: no sample)")
	flag.IntVar(&o.dropAfter, "drop-after", 0,
		"drop each job's first stream after `N` events and resume it with WatchJob (shows the reconnect)")
	flag.Parse()
	if o.model == "" || o.data == "" || o.workdir == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr,
			"orchestrator: --model, --data and --workdir are required; no positional arguments")
		flag.Usage()
		os.Exit(2)
	}
	return o
}

// row is one line of the summary.
type row struct {
	name    string
	outcome *JobOutcome // nil: the request was refused, no job exists
	detail  string
}

func (r *row) succeeded() bool { return r.outcome != nil && r.outcome.Succeeded() }

func main() { os.Exit(run(parseFlags())) }

func run(o options) int {
	quantized := o.workdir + "/model-nf4"
	adapter := o.workdir + "/adapter"
	evalData := o.evalData
	if evalData == "" {
		evalData = o.data
	}
	printer := NewProgressPrinter()
	var summary []*row

	ctx := context.Background()
	client, err := qlorad.Connect(ctx, o.target, qlorad.Options{
		TLS: o.useTLS, CACertFile: o.caCert, Token: o.token,
		OnReconnect: func(jobID string, fromSeq uint64, reason string) {
			printer.Line(fmt.Sprintf("stream lost (%s); reconnecting: WatchJob(%s, from_seq=%d)",
				reason, jobID, fromSeq))
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "orchestrator:", err)
		return 1
	}
	defer client.Close()
	fmt.Println("connected to", o.target)

	// job runs one job and adds its summary row.
	job := func(name string, start func() (*qlorad.JobStream, error)) *row {
		fmt.Println("== " + name)
		r := &row{name: name}
		outcome, err := RunJob(start, printer, o.dropAfter)
		if err != nil {
			qerr := qlorad.FromGRPC(err).(*qlorad.Error)
			r.detail = fmt.Sprintf("refused %s: %s", qlorad.CodeName(qerr.Code), qerr.Message)
			printer.Line(strings.TrimPrefix(r.detail, "refused "))
		} else {
			r.outcome = outcome
			if e := outcome.Final.GetError(); e != nil {
				r.detail = fmt.Sprintf("%s: %s", e.Code, e.Message)
			}
		}
		summary = append(summary, r)
		return r
	}
	evaluate := func(name, adapterPath string) {
		req := &pb.EvaluateRequest{BaseModelPath: quantized, AdapterPath: adapterPath,
			DatasetPath: evalData, MaxSeqLen: uint32(o.maxSeqLen)}
		r := job(name, func() (*qlorad.JobStream, error) { return client.Evaluate(ctx, req) })
		if r.succeeded() {
			r.detail = qlorad.FormatEval(r.outcome.Final.GetEvalResult())
		}
	}

	// sample runs a greedy Generate, its text printed as it streams. Not dropped: Generate
	// follows its call, so a dropped stream would cancel it.
	sample := func(name, adapterPath string) {
		fmt.Println("== " + name)
		r := &row{name: name}
		summary = append(summary, r)
		s, err := client.Generate(ctx, &pb.GenerateRequest{BaseModelPath: quantized,
			AdapterPath: adapterPath, Prompt: o.samplePrompt, MaxNewTokens: uint32(o.sampleTokens)})
		if err != nil {
			qerr := qlorad.FromGRPC(err).(*qlorad.Error)
			r.detail = fmt.Sprintf("refused %s: %s", qlorad.CodeName(qerr.Code), qerr.Message)
			printer.Line(strings.TrimPrefix(r.detail, "refused "))
			return
		}
		defer s.Close()
		var final *pb.JobEvent
		for {
			ev, err := s.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				fmt.Println()
				r.detail = err.Error()
				return
			}
			if final == nil {
				printer.Line("job " + ev.JobId)
				fmt.Print("  > " + o.samplePrompt)
			}
			final = ev
			if g := ev.GetGeneratedText(); g != nil {
				fmt.Print(g.Text)
			}
		}
		fmt.Println()
		r.outcome = &JobOutcome{Final: final, Latest: map[string]*pb.JobEvent{}}
		if res := final.GetGenerateResult(); r.succeeded() && res != nil {
			finish := strings.ToLower(strings.TrimPrefix(res.FinishReason.String(), "FINISH_REASON_"))
			text, _ := json.Marshal(res.Text)
			r.detail = fmt.Sprintf("%d tokens, %s: %s", res.GeneratedTokens, finish, text)
		} else if e := final.GetError(); e != nil {
			r.detail = fmt.Sprintf("%s: %s", e.Code, e.Message)
		}
	}

	qreq := &pb.QuantizeRequest{ModelPath: o.model, OutputPath: quantized,
		QuantType: pb.QuantType_QUANT_TYPE_NF4, Overwrite: o.overwrite}
	q := job("quantize", func() (*qlorad.JobStream, error) { return client.Quantize(ctx, qreq) })
	if q.succeeded() {
		res := q.outcome.Final.GetQuantizeResult()
		q.detail = fmt.Sprintf("%s (%.3f bits/parameter)", res.OutputPath, res.BitsPerParameter)
	}
	if q.succeeded() && !o.quantizeOnly {
		lr := o.learningRate
		treq := &pb.TrainRequest{
			BaseModelPath: quantized, DatasetPath: o.data, EvalDatasetPath: o.evalData,
			OutputPath: adapter, Lora: &pb.LoraConfig{R: uint32(o.loraR)},
			Hyperparameters: &pb.Hyperparameters{MaxSteps: uint32(o.steps),
				MaxSeqLen: uint32(o.maxSeqLen), LearningRate: &lr},
			Overwrite: o.overwrite,
		}
		t := job("train", func() (*qlorad.JobStream, error) { return client.Train(ctx, treq) })
		if t.succeeded() {
			t.detail = "adapter " + adapter
			if m := t.outcome.Latest["train_metrics"]; m != nil {
				t.detail += fmt.Sprintf("  final loss %.6f", m.GetTrainMetrics().Loss)
			}
		}
		evaluate("eval-base", "")
		if t.succeeded() {
			evaluate("eval-adapter", adapter)
			if o.sampleTokens > 0 {
				sample("sample", adapter)
			}
		}
	}

	fmt.Println("summary:")
	code := 0
	for _, r := range summary {
		head := "no job"
		if r.outcome != nil {
			head = fmt.Sprintf("job %s %s", r.outcome.Final.JobId, qlorad.StateName(r.outcome.Final.State))
		}
		fmt.Println(strings.TrimRight(fmt.Sprintf("  %-13s%s  %s", r.name, head, r.detail), " "))
		if !r.succeeded() {
			code = 1
		}
	}
	return code
}
