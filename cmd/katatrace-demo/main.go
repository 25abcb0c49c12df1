// Command katatrace-demo shows katatrace's whole path on one machine, with no
// VM and, by default, no Jaeger: a host relay printing traces as trees, a
// guest relay, a unix socket between them standing in for vsock, and a real
// jaeger-client-go trace shaped like a Kata agent's.
//
//	go run ./cmd/katatrace-demo --bin bin/katatrace
//	JAEGER=udp://127.0.0.1:6831 go run ./cmd/katatrace-demo --bin bin/katatrace
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opentracing/opentracing-go"
	"github.com/opentracing/opentracing-go/log"
	"github.com/uber/jaeger-client-go/config"

	"github.com/katatrace/katatrace/internal/freeport"
)

func main() {
	bin := flag.String("bin", "bin/katatrace", "the katatrace binary")
	to := flag.String("jaeger", os.Getenv("JAEGER"), "where the host relay sends: empty prints the trace; udp://HOST:6831 or http://HOST:14268/api/traces sends it to Jaeger ($JAEGER)")
	ui := flag.String("ui", "http://127.0.0.1:16686", "the Jaeger UI, for the link printed with -jaeger")
	flag.Parse()
	if err := run(*bin, *to, *ui); err != nil {
		fmt.Fprintln(os.Stderr, "katatrace-demo:", err)
		os.Exit(1)
	}
}

func run(bin, to, ui string) error {
	dir, err := os.MkdirTemp("", "katatrace-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sink := to
	if sink == "" {
		sink = "print"
	}
	sock := filepath.Join(dir, "kata.hvsock_6831") // what Firecracker names a guest's port 6831
	fmt.Printf("host relay:  %s vsock-to-udp-server --from unix://%s --to %s\n", bin, sock, sink)
	host, err := startRelay(bin, dir, "vsock-to-udp-server", "--from", "unix://"+sock, "--to", sink)
	if err != nil {
		return err
	}
	defer host.stop()
	udp, err := freeUDP()
	if err != nil {
		return err
	}
	fmt.Printf("guest relay: %s jaeger-client-socat-redirector --from udp://%s --to unix://%s\n\n", bin, udp, sock)
	guest, err := startRelay(bin, dir, "jaeger-client-socat-redirector", "--from", "udp://"+udp, "--to", "unix://"+sock)
	if err != nil {
		return err
	}
	defer guest.stop()

	id, err := emit(udp)
	if err != nil {
		return err
	}
	// SIGTERM makes the guest relay send all it holds and wait for the host
	// to confirm; the host prints traces at that flush.
	if err := guest.stop(); err != nil {
		return fmt.Errorf("guest relay: %w", err)
	}
	if err := host.stop(); err != nil {
		return fmt.Errorf("host relay: %w", err)
	}
	if to != "" {
		fmt.Printf("\ntrace %s sent to %s\nopen %s/trace/%s\n", id, to, strings.TrimSuffix(ui, "/"), id)
	}
	return nil
}

// relay is a running relay and the notify socket it tells its state on.
type relay struct {
	cmd    *exec.Cmd
	notify *net.UnixConn
}

// startRelay starts a relay and waits for its READY=1, on a notify
// socket of its own in dir: a relay also tells its STATUS= (before or
// after it is ready) and STOPPING=1, and two relays' messages must not
// mix.
func startRelay(bin, dir string, args ...string) (*relay, error) {
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "notify-"+args[0]), Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	r := &relay{cmd: exec.Command(bin, append(args, "--log-level=warn")...), notify: notify}
	r.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify.LocalAddr().String())
	r.cmd.Stdout, r.cmd.Stderr = os.Stdout, os.Stderr
	if err := r.cmd.Start(); err != nil {
		notify.Close()
		return nil, err
	}
	_ = notify.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	var said []string
	for {
		n, err := notify.Read(buf)
		if err != nil {
			_ = r.cmd.Process.Kill()
			_ = r.stop()
			return nil, fmt.Errorf("%s did not become ready (it said %q): %w", args[0], said, err)
		}
		msg := string(buf[:n])
		said = append(said, msg)
		for _, l := range strings.Split(msg, "\n") {
			if l == "READY=1" {
				return r, nil
			}
		}
	}
}

// stop sends SIGTERM once and waits for a clean exit; the notify socket
// is closed after it.
func (r *relay) stop() error {
	if r.cmd.ProcessState != nil {
		return nil
	}
	defer r.notify.Close()
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(15 * time.Second):
		_ = r.cmd.Process.Kill()
		return errors.New("did not stop within 15s")
	}
}

// freeUDP is a free loopback UDP address, outside the ephemeral range.
func freeUDP() (string, error) {
	p, err := freeport.Pick("udp")
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), err
}

// emit sends a trace shaped like a statically traced Kata agent's.
func emit(agent string) (string, error) {
	cfg := config.Configuration{
		ServiceName: "kata-agent",
		Sampler:     &config.SamplerConfig{Type: "const", Param: 1},
		Reporter:    &config.ReporterConfig{LocalAgentHostPort: agent, BufferFlushInterval: 100 * time.Millisecond},
		Tags:        []opentracing.Tag{{Key: "katatrace.demo", Value: true}},
	}
	tr, closer, err := cfg.NewTracer()
	if err != nil {
		return "", err
	}
	root := tr.StartSpan("kata-agent", opentracing.Tag{Key: "source", Value: "agent"},
		opentracing.Tag{Key: "root-span", Value: true}, opentracing.Tag{Key: "trace-mode", Value: "static"})
	step := func(op string, d time.Duration, fields ...log.Field) opentracing.Span {
		s := tr.StartSpan(op, opentracing.ChildOf(root.Context()))
		time.Sleep(d)
		if len(fields) > 0 {
			s.LogFields(fields...)
		}
		return s
	}
	step("boot", 3*time.Millisecond).Finish()
	step("agent-start", time.Millisecond, log.Int("pid", 42)).Finish()
	run := step("agent-run", 5*time.Millisecond)
	ctx := opentracing.ContextWithSpan(context.Background(), run)
	for _, op := range []string{"CreateSandbox", "CreateContainer", "StartContainer"} {
		s, _ := opentracing.StartSpanFromContextWithTracer(ctx, tr, op)
		time.Sleep(2 * time.Millisecond)
		s.SetTag("grpc.status", "OK")
		s.Finish()
	}
	run.SetTag("exit-code", 0)
	run.Finish()
	step("shutdown", time.Millisecond, log.String("event", "flushed")).Finish()
	root.Finish()
	id := strings.SplitN(fmt.Sprint(root.Context()), ":", 2)[0]
	return id, closer.Close()
}
