// Command grpcagent stands in for a Kata agent built with tracing, for the
// end-to-end proxy test: it serves the test agent API on a unix socket,
// traces every call (jaeger-client-go from the environment the shim gives:
// JAEGER_AGENT_HOST/PORT), and stops on SIGTERM.
//
//	grpcagent /path/to/agent.sock SERVICE-NAME
package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	otgrpc "github.com/opentracing-contrib/go-grpc"
	"github.com/uber/jaeger-client-go/config"
	"google.golang.org/grpc"

	"github.com/katatrace/katatrace/internal/testagent"
)

func main() {
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "grpcagent:", err)
		os.Exit(1)
	}
}

func run(sock, service string) error {
	cfg, err := config.FromEnv()
	if err != nil {
		return err
	}
	cfg.ServiceName = service
	cfg.Sampler = &config.SamplerConfig{Type: "const", Param: 1}
	tr, closer, err := cfg.NewTracer()
	if err != nil {
		return err
	}
	defer closer.Close()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(otgrpc.OpenTracingServerInterceptor(tr)),
		grpc.StreamInterceptor(otgrpc.OpenTracingStreamServerInterceptor(tr)))
	(&testagent.Agent{}).Register(srv)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sigs; srv.GracefulStop() }()
	fmt.Println("grpcagent: serving", sock)
	return srv.Serve(ln)
}
