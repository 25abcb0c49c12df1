// Package storetest stands in for systemd, as far as a unit's file
// descriptor store goes, on machines where systemd does not run: a notify
// socket that keeps what FDSTORE=1 sends (by FDNAME), lets go what
// FDSTOREREMOVE=1 names, and starts the unit's next process with what it
// keeps in LISTEN_FDS and LISTEN_FDNAMES, as systemd does at a restart.
// The e2e VM suite checks the same against systemd itself.
package storetest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/testutil"
	"golang.org/x/sys/unix"
)

// Max is the store's size (FileDescriptorStoreMax=). Beyond it systemd
// closes what it is sent; this store keeps it: the process under test
// counts for itself.
const Max = 8192

// Manager is one unit's notify socket and file descriptor store.
type Manager struct {
	t    testing.TB
	path string
	conn *net.UnixConn

	mu     sync.Mutex
	store  []entry
	states []string // every notification, in order
}

type entry struct {
	name string
	f    *os.File
}

// New listens on a notify socket in a directory of the test's.
func New(t testing.TB) *Manager {
	t.Helper()
	path := filepath.Join(testutil.SockDir(t), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	m := &Manager{t: t, path: path, conn: c}
	done := make(chan struct{})
	go m.serve(done)
	t.Cleanup(func() {
		_ = c.Close()
		<-done
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, e := range m.store {
			_ = e.f.Close()
		}
	})
	return m
}

func (m *Manager) serve(done chan struct{}) {
	defer close(done)
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*16))
	for {
		n, oobn, _, _, err := m.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		var files []*os.File
		if cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, c := range cmsgs {
				fds, _ := unix.ParseUnixRights(&c)
				for _, fd := range fds {
					unix.CloseOnExec(fd) // as systemd keeps them: passed on only as LISTEN_FDS
					files = append(files, os.NewFile(uintptr(fd), "stored"))
				}
			}
		}
		m.take(string(buf[:n]), files)
	}
}

// take does what systemd does with one notification.
func (m *Manager) take(state string, files []*os.File) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.states = append(m.states, state)
	kv := map[string]string{}
	for _, line := range strings.Split(state, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			kv[k] = v
		}
	}
	switch {
	case kv["FDSTORE"] == "1":
		for _, f := range files {
			m.store = append(m.store, entry{name: kv["FDNAME"], f: f})
		}
		return
	case kv["FDSTOREREMOVE"] == "1":
		m.store = slices.DeleteFunc(m.store, func(e entry) bool {
			if e.name == kv["FDNAME"] {
				_ = e.f.Close()
				return true
			}
			return false
		})
	}
	for _, f := range files {
		_ = f.Close()
	}
}

// Path is the notify socket's path (NOTIFY_SOCKET).
func (m *Manager) Path() string { return m.path }

// Files are copies of what the store holds, by name, as a process of the
// unit would get them (the caller closes them).
func (m *Manager) Files() map[string]*os.File {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]*os.File{}
	for _, e := range m.store {
		// Not Fd: it would make the socket blocking for every copy.
		rc, err := e.f.SyscallConn()
		if err != nil {
			m.t.Fatal(err)
		}
		var fd int
		if err := rc.Control(func(p uintptr) { fd, err = unix.FcntlInt(p, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
			m.t.Fatal(err)
		}
		if err != nil {
			m.t.Fatal(err)
		}
		out[e.name] = os.NewFile(uintptr(fd), e.name)
	}
	return out
}

// Names lists what the store holds, in the order it was stored.
func (m *Manager) Names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, e := range m.store {
		out = append(out, e.name)
	}
	return out
}

// Sent reports whether a notification was state (READY=1, say).
func (m *Manager) Sent(state string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Contains(m.states, state)
}

// Start runs path with args as the unit's next process: NOTIFY_SOCKET
// set, and what the store holds passed from fd 3 on, named.
func (m *Manager) Start(env []string, path string, args ...string) *testutil.Proc {
	m.t.Helper()
	m.mu.Lock()
	var names []string
	var files []*os.File
	for _, e := range m.store {
		names, files = append(names, e.name), append(files, e.f)
	}
	m.states = nil
	m.mu.Unlock()
	// systemd sets LISTEN_PID between fork and exec; a shell that execs
	// keeps its pid.
	cmd := exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$ exec "$0" "$@"`, path}, args...)...)
	// A race-detector build sleeps a second at exit (atexit_sleep_ms): a
	// restart would keep peers waiting that long.
	// $FDSTORE says the store's size, as systemd 254 and later do.
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+m.path, "FDSTORE="+strconv.Itoa(Max), "GORACE=atexit_sleep_ms=0")
	if len(files) > 0 {
		cmd.Env = append(cmd.Env, "LISTEN_FDS="+strconv.Itoa(len(files)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = files
	return testutil.StartCmd(m.t, cmd)
}

// WaitReady waits for READY=1 from the process started last.
func (m *Manager) WaitReady(p *testutil.Proc) {
	m.t.Helper()
	testutil.Eventually(m.t, 15*time.Second, "READY=1", func() bool {
		select {
		case <-p.Done():
			m.t.Fatalf("exited before READY=1:\n%s", p.Stderr.String())
		default:
		}
		return m.Sent("READY=1")
	})
}

// String lists the store, for a failure's message.
func (m *Manager) String() string {
	var b bytes.Buffer
	for _, n := range m.Names() {
		fmt.Fprintln(&b, n)
	}
	return b.String()
}
