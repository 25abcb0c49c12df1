package roles

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestKept: what a process that executed itself anew finds in its
// environment is taken only as its own kept sockets: its pid, numbers in
// their canonical form above stderr, names a store holds, once each,
// descriptors open.
func TestKept(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "kept")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pid := strconv.Itoa(os.Getpid())
	for _, tt := range []struct {
		name, fds, pid, err string
		n                   int
	}{
		{"none", "", "", "", 0},
		{"another process's", `{"FD":"kt-m.1"}`, "1", "", 0},
		{"one", `{"FD":"kt-m.1"}`, pid, "", 1},
		{"not JSON", `kt-m.1`, pid, "KATATRACE_KEPT_FDS", 0},
		{"stdin", `{"0":"kt-m.1"}`, pid, "not a kept socket's number", 0},
		{"a number not in its form", `{"0FD":"kt-m.1"}`, pid, "not a kept socket's number", 0},
		{"a name no store holds", `{"FD":"kt\tm"}`, pid, "not printable ASCII", 0},
		{"a closed descriptor", `{"999999":"kt-m.1"}`, pid, "bad file descriptor", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// A descriptor of the case's own, closed through what kept
			// returns: an os.File left to the collector would close its
			// number later, whatever holds it by then.
			n, err := unix.Dup(int(f.Fd()))
			if err != nil {
				t.Fatal(err)
			}
			fd := strconv.Itoa(n)
			defer func() {
				if n >= 0 {
					unix.Close(n)
				}
			}()
			tt.fds = strings.ReplaceAll(tt.fds, "FD", fd)
			t.Setenv(envKeptFDs, tt.fds)
			t.Setenv(envKeptPID, tt.pid)
			files, err := kept()
			switch {
			case tt.err == "" && err != nil:
				t.Fatalf("kept: %v", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("kept = %v, %v; want an error saying %q", files, err, tt.err)
			case len(files) != tt.n:
				t.Fatalf("kept %d descriptors, want %d", len(files), tt.n)
			}
			if os.Getenv(envKeptFDs) != "" || os.Getenv(envKeptPID) != "" {
				t.Error("the environment is left for children to inherit")
			}
			for _, kf := range files {
				if fmt.Sprint(kf.Fd()) != fd {
					t.Errorf("descriptor %d, want %s", kf.Fd(), fd)
				}
				kf.Close()
				n = -1 // closed
			}
		})
	}
}
