package qlorad

// Tests against a live server (tests/clients/clients_test.ts starts one and sets
// QLORAD_TEST_TARGET, host:port, and QLORAD_TEST_MODEL, a Hugging Face folder in its data
// directory; that test requires these to PASS, not SKIP): resuming a dropped stream, typed errors;
// and, against a second server with mutual TLS and a bearer token (QLORAD_TEST_SECURE_TARGET,
// QLORAD_TEST_TOKEN, QLORAD_TEST_CERTS with ca.crt, client.crt, client.key, and
// QLORAD_TEST_SERVER_NAME, the only name in the server's certificate), the connection options.

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	pb "github.com/qlorad/qlorad/clients/go/gen/qloradv1"
	"google.golang.org/protobuf/proto"
)

// dropAfter: events before a drop; a quantize job of the tiny model has more.
const dropAfter = 3

func live(t *testing.T) (*Client, string) {
	target, model := os.Getenv("QLORAD_TEST_TARGET"), os.Getenv("QLORAD_TEST_MODEL")
	if target == "" || model == "" {
		t.Skip("needs QLORAD_TEST_TARGET and QLORAD_TEST_MODEL (a live server)")
	}
	c, err := Connect(context.Background(), target, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, model
}

func drain(t *testing.T, s *JobStream) []*pb.JobEvent {
	t.Helper()
	var events []*pb.JobEvent
	for {
		ev, err := s.Recv()
		if err == io.EOF {
			return events
		}
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, ev)
	}
}

// checkLog: seqs 1..n, the last SUCCEEDED, and equal to a fresh WatchJob's full replay.
func checkLog(t *testing.T, c *Client, events []*pb.JobEvent) {
	t.Helper()
	for i, ev := range events {
		if ev.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, ev.Seq)
		}
	}
	if last := events[len(events)-1]; last.State != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("last event %v", last)
	}
	replay, err := c.Watch(context.Background(), events[0].JobId, 0)
	if err != nil {
		t.Fatal(err)
	}
	full := drain(t, replay)
	if len(full) != len(events) {
		t.Fatalf("%d events, the replay has %d", len(events), len(full))
	}
	for i := range full {
		if !proto.Equal(full[i], events[i]) {
			t.Fatalf("event %d differs from the replay:\n%v\n%v", i, events[i], full[i])
		}
	}
}

func TestLiveWatchResumesAfterTheClientClosedItsStream(t *testing.T) {
	c, model := live(t)
	ctx := context.Background()
	s, err := c.Quantize(ctx, &pb.QuantizeRequest{ModelPath: model, OutputPath: "go-live/closed", Overwrite: true})
	if err != nil {
		t.Fatal(err)
	}
	var events []*pb.JobEvent
	for len(events) < dropAfter {
		ev, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, ev)
	}
	s.Close()
	rest, err := c.Watch(ctx, s.JobID(), s.LastSeq()+1)
	if err != nil {
		t.Fatal(err)
	}
	more := drain(t, rest)
	if len(more) < 2 {
		t.Fatalf("only %d events after the drop", len(more))
	}
	checkLog(t, c, append(events, more...))
}

func TestLiveADroppedStreamResumesByItself(t *testing.T) {
	c, model := live(t)
	var told []string
	c.onReconnect = func(jobID string, fromSeq uint64, reason string) { told = append(told, reason) }
	s, err := c.Quantize(context.Background(),
		&pb.QuantizeRequest{ModelPath: model, OutputPath: "go-live/dropped", Overwrite: true})
	if err != nil {
		t.Fatal(err)
	}
	var events []*pb.JobEvent
	for {
		ev, err := s.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if events = append(events, ev); len(events) == dropAfter {
			s.Drop()
		}
	}
	if !reflect.DeepEqual(told, []string{"dropped by the client"}) || s.Reconnects() != 1 {
		t.Fatalf("reconnects %d, told %v", s.Reconnects(), told)
	}
	if len(events) <= dropAfter+1 {
		t.Fatalf("only %d events", len(events))
	}
	checkLog(t, c, events)
}

func TestLiveABadRequestIsInvalidArgumentNamingTheField(t *testing.T) {
	c, model := live(t)
	_, err := c.Quantize(context.Background(),
		&pb.QuantizeRequest{ModelPath: model, OutputPath: "go-live/bad", Blocksize: 48})
	var qerr *Error
	if !errors.Is(err, ErrInvalidArgument) || !errors.As(err, &qerr) ||
		!strings.Contains(qerr.Message, "blocksize") {
		t.Fatalf("got %v, want INVALID_ARGUMENT naming blocksize", err)
	}
}

func TestLiveAnUnknownJobIsNotFound(t *testing.T) {
	c, _ := live(t)
	if _, err := c.GetJob(context.Background(), "no-such-job"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetJob: %v", err)
	}
	if _, err := c.Watch(context.Background(), "no-such-job", 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("Watch: %v", err)
	}
}

func secure(t *testing.T, token string) *Client {
	target, certs := os.Getenv("QLORAD_TEST_SECURE_TARGET"), os.Getenv("QLORAD_TEST_CERTS")
	if target == "" || certs == "" || os.Getenv("QLORAD_TEST_TOKEN") == "" {
		t.Skip("needs QLORAD_TEST_SECURE_TARGET, QLORAD_TEST_TOKEN and QLORAD_TEST_CERTS")
	}
	c, err := Connect(context.Background(), target, Options{
		Token: token, CACertFile: filepath.Join(certs, "ca.crt"),
		ClientCertFile: filepath.Join(certs, "client.crt"),
		ClientKeyFile:  filepath.Join(certs, "client.key"),
		ServerName:     os.Getenv("QLORAD_TEST_SERVER_NAME"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestLiveSecureWithTheTokenReachesTheService(t *testing.T) {
	// NOT_FOUND comes from the handler: TLS, the client certificate and the token all passed.
	c := secure(t, os.Getenv("QLORAD_TEST_TOKEN"))
	if _, err := c.GetJob(context.Background(), "no-such-job"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetJob: %v, want NOT_FOUND", err)
	}
}

func TestLiveSecureWithoutTheTokenIsUnauthenticated(t *testing.T) {
	_, err := secure(t, "").GetJob(context.Background(), "no-such-job")
	var qerr *Error
	if !errors.As(err, &qerr) || qerr.Code != ErrUnauthenticated.Code ||
		!strings.Contains(qerr.Message, "bearer token") {
		t.Fatalf("GetJob: %v, want UNAUTHENTICATED", err)
	}
	_, err = secure(t, os.Getenv("QLORAD_TEST_TOKEN")+"x").Watch(context.Background(), "no-such-job", 0)
	if !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("Watch with a wrong token: %v", err)
	}
}
