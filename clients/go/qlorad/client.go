// Package qlorad is the Go client of the qlorad QLoRA fine-tuning service (gRPC qlorad.v1).
//
//	c, err := qlorad.Connect(ctx, "127.0.0.1:50051", qlorad.Options{Token: token})
//	stream, err := c.Quantize(ctx, &qloradv1.QuantizeRequest{ModelPath: "tiny", OutputPath: "tiny-nf4"})
//	for {
//		ev, err := stream.Recv() // io.EOF after the job's final event
//		...
//	}
//
// Job RPCs (Quantize, Train, Evaluate, Generate, Export, Watch) return a *JobStream that resumes a dropped stream
// from the last seq; the others return their response. Every failed call returns an *Error with
// the gRPC code (errors.Is(err, qlorad.ErrInvalidArgument)).
package qlorad

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	pb "github.com/qlorad/qlorad/clients/go/gen/qloradv1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
)

// Options of a connection. The zero value is plaintext with no token.
type Options struct {
	// Token is sent as "authorization: Bearer <token>" (the server's QLORAD_AUTH_TOKEN).
	Token string
	// TLS with the system roots; CACertFile or a client certificate imply TLS.
	TLS bool
	// CACertFile: a PEM file of the CA that signed the server's certificate.
	CACertFile string
	// ClientCertFile and ClientKeyFile: a client certificate (PEM), for a server with
	// --tls-client-ca (mutual TLS).
	ClientCertFile, ClientKeyFile string
	// ServerName to check the server's certificate against, when it is not the target's host.
	ServerName string
	// Timeout for the connection to become ready; 0 means 15 s.
	Timeout time.Duration
	// Retries: reconnects in a row without an event before a JobStream gives up; 0 means 8.
	Retries int
	// OnReconnect is told before each WatchJob that resumes a dropped stream.
	OnReconnect ReconnectFunc
}

// Client is a connection to a qlorad server.
type Client struct {
	conn *grpc.ClientConn
	// Stub is the generated client, for RPCs this package does not wrap yet.
	Stub        pb.QLoRAClient
	token       string
	retries     int
	onReconnect ReconnectFunc
}

func transport(o Options) (grpc.DialOption, error) {
	if !o.TLS && o.CACertFile == "" && o.ClientCertFile == "" {
		return grpc.WithInsecure(), nil
	}
	if (o.ClientCertFile == "") != (o.ClientKeyFile == "") {
		return nil, &Error{Code: codes.InvalidArgument,
			Message: "ClientCertFile and ClientKeyFile go together"}
	}
	config := &tls.Config{ServerName: o.ServerName}
	if o.CACertFile != "" {
		pem, err := os.ReadFile(o.CACertFile)
		if err != nil {
			return nil, &Error{Code: codes.InvalidArgument, Message: fmt.Sprintf("CACertFile: %v", err)}
		}
		config.RootCAs = x509.NewCertPool()
		if !config.RootCAs.AppendCertsFromPEM(pem) {
			return nil, &Error{Code: codes.InvalidArgument,
				Message: fmt.Sprintf("CACertFile %s: no PEM certificate", o.CACertFile)}
		}
	}
	if o.ClientCertFile != "" {
		pair, err := tls.LoadX509KeyPair(o.ClientCertFile, o.ClientKeyFile)
		if err != nil {
			return nil, &Error{Code: codes.InvalidArgument,
				Message: fmt.Sprintf("ClientCertFile/ClientKeyFile: %v", err)}
		}
		config.Certificates = []tls.Certificate{pair}
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(config)), nil
}

// Connect dials target (host:port) and waits until the connection is ready; a server that does
// not answer in time is ErrUnavailable.
func Connect(ctx context.Context, target string, o Options) (*Client, error) {
	creds, err := transport(o)
	if err != nil {
		return nil, err
	}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	retries := o.Retries
	if retries == 0 {
		retries = 8
	}
	dialCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := grpc.DialContext(dialCtx, target, creds, grpc.WithBlock())
	if err != nil {
		return nil, &Error{Code: codes.Unavailable,
			Message: fmt.Sprintf("cannot reach qlorad at %s within %v: %v", target, timeout, err)}
	}
	return &Client{conn: conn, Stub: pb.NewQLoRAClient(conn), token: o.Token, retries: retries,
		onReconnect: o.OnReconnect}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// WithToken is ctx carrying the bearer token, for calls made on Stub directly.
func (c *Client) WithToken(ctx context.Context) context.Context {
	if c.token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
}

// StartJob follows a job-streaming RPC: start opens it with the context it is given. The
// extension point for job RPCs added to the proto later (Generate and Export use it):
//
//	c.StartJob(ctx, func(ctx context.Context) (qlorad.EventStream, error) { return c.Stub.Rpc(ctx, req) })
func (c *Client) StartJob(ctx context.Context, start StartFunc) (*JobStream, error) {
	return newJobStream(c.WithToken(ctx), start, c.watchCall, "", 0, c.retries, c.onReconnect)
}

func (c *Client) watchCall(ctx context.Context, jobID string, fromSeq uint64) (EventStream, error) {
	return c.Stub.WatchJob(ctx, &pb.WatchJobRequest{JobId: jobID, FromSeq: fromSeq})
}

// Quantize quantizes a Hugging Face checkpoint folder to 4 bits. A refused request is the error.
func (c *Client) Quantize(ctx context.Context, req *pb.QuantizeRequest) (*JobStream, error) {
	return c.StartJob(ctx, func(ctx context.Context) (EventStream, error) {
		return c.Stub.Quantize(ctx, req)
	})
}

// Train trains a LoRA adapter on a 4-bit base. A refused request is the error.
func (c *Client) Train(ctx context.Context, req *pb.TrainRequest) (*JobStream, error) {
	return c.StartJob(ctx, func(ctx context.Context) (EventStream, error) {
		return c.Stub.Train(ctx, req)
	})
}

// Evaluate evaluates a base model, or a base plus an adapter. A refused request is the error.
func (c *Client) Evaluate(ctx context.Context, req *pb.EvaluateRequest) (*JobStream, error) {
	return c.StartJob(ctx, func(ctx context.Context) (EventStream, error) {
		return c.Stub.Evaluate(ctx, req)
	})
}

// Watch follows a job from seq fromSeq on (1 or 0: all of it) until it ends.
func (c *Client) Watch(ctx context.Context, jobID string, fromSeq uint64) (*JobStream, error) {
	if fromSeq == 0 {
		fromSeq = 1
	}
	start := func(ctx context.Context) (EventStream, error) { return c.watchCall(ctx, jobID, fromSeq) }
	return newJobStream(c.WithToken(ctx), start, c.watchCall, jobID, fromSeq-1, c.retries, c.onReconnect)
}

// GetJob is one job's record; ErrNotFound for an unknown id.
func (c *Client) GetJob(ctx context.Context, jobID string) (*pb.Job, error) {
	job, err := c.Stub.GetJob(c.WithToken(ctx), &pb.GetJobRequest{JobId: jobID})
	return job, FromGRPC(err)
}

// ListJobs lists jobs, newest first.
func (c *Client) ListJobs(ctx context.Context, req *pb.ListJobsRequest) ([]*pb.Job, error) {
	res, err := c.Stub.ListJobs(c.WithToken(ctx), req)
	if err != nil {
		return nil, FromGRPC(err)
	}
	return res.Jobs, nil
}

// CancelJob cancels a queued or running job; its record after the request.
func (c *Client) CancelJob(ctx context.Context, jobID string) (*pb.Job, error) {
	res, err := c.Stub.CancelJob(c.WithToken(ctx), &pb.CancelJobRequest{JobId: jobID})
	if err != nil {
		return nil, FromGRPC(err)
	}
	return res.Job, nil
}

// EstimateMemory is the device memory a training run would use, by category.
func (c *Client) EstimateMemory(
	ctx context.Context, req *pb.EstimateMemoryRequest,
) (*pb.EstimateMemoryResponse, error) {
	res, err := c.Stub.EstimateMemory(c.WithToken(ctx), req)
	return res, FromGRPC(err)
}
