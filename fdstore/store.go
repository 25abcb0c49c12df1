package fdstore

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"

	"github.com/katatrace/katatrace/systemd"
)

// StateName is the FDNAME of the state a process hands its successor.
const StateName = "kt-state"

// ErrFull is a Keep beyond the store's size: systemd would close the
// descriptor without a word.
var ErrFull = errors.New("the file descriptor store is full (FileDescriptorStoreMax=)")

// Store is systemd's file descriptor store for this process's unit.
type Store struct {
	notify string // NOTIFY_SOCKET's path
	max    int

	mu sync.Mutex
	n  int // descriptors in the store
}

// Open returns the store of the unit this process runs as, or nil when it
// runs under no service manager (NOTIFY_SOCKET unset), one reached over
// vsock (which cannot pass descriptors), or one that keeps no store for
// it. Its size is $FDSTORE where systemd says it (254 and later), else
// max, which must be the unit's FileDescriptorStoreMax= (systemd 252
// says nothing, and closes without a word what a store of 0 is sent); 0
// is no store. held is how many of this process's descriptors the store
// holds already (adopted from it). One place is kept for the state a
// process hands its successor (StateName).
func Open(max, held int) (*Store, error) {
	a, err := systemd.ParseNotifySocket(os.Getenv("NOTIFY_SOCKET"))
	if err != nil || a.Network != "unixgram" {
		return nil, err
	}
	if v := os.Getenv("FDSTORE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("FDSTORE=%q: not a size", v)
		}
		max = n
	}
	if max < 2 {
		return nil, nil // one place for connections, one for the state
	}
	return &Store{notify: a.Path, max: max, n: held}, nil
}

// Max is the store's size.
func (s *Store) Max() int { return s.max }

// Len is how many descriptors the store holds.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// Keep puts a socket (a connection, a listener) in the store under name
// (unique, at most 255 printable ASCII bytes, no ':'); systemd keeps its
// own copy.
func (s *Store) Keep(name string, sock syscall.Conn) error {
	rc, err := sock.SyscallConn()
	if err != nil {
		return err
	}
	return s.keep(name, rc)
}

// KeepFile puts f in the store under name.
func (s *Store) KeepFile(name string, f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return s.keep(name, rc)
}

func (s *Store) keep(name string, rc syscall.RawConn) error {
	if err := CheckName(name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n >= s.max || s.n >= s.max-1 && name != StateName {
		return fmt.Errorf("%w: it holds %d (one place is kept for the handover's state)", ErrFull, s.n)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = send(s.notify, "FDSTORE=1\nFDPOLL=0\nFDNAME="+name, int(fd))
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("store %s: %w", name, serr)
	}
	s.n++
	return nil
}

// Forget takes name's descriptor out of the store. On a nil Store (this
// process keeps none) it is Remove: what a predecessor kept still goes.
func (s *Store) Forget(name string) error {
	if s == nil {
		return Remove(name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := remove(s.notify, name); err != nil {
		return err
	}
	s.n = max(s.n-1, 0)
	return nil
}

// Remove takes name's descriptor out of the unit's store, whether this
// process keeps one there or not (a predecessor's, left when this one
// keeps none); without a service manager, it does nothing.
func Remove(name string) error {
	a, err := systemd.ParseNotifySocket(os.Getenv("NOTIFY_SOCKET"))
	if err != nil || a.Network != "unixgram" {
		return err
	}
	return remove(a.Path, name)
}

func remove(notify, name string) error {
	if err := CheckName(name); err != nil {
		return err
	}
	if err := send(notify, "FDSTOREREMOVE=1\nFDNAME="+name, -1); err != nil {
		return fmt.Errorf("remove %s from the store: %w", name, err)
	}
	return nil
}

// CheckName refuses what systemd would refuse as an FDNAME: the names a
// host role keeps its sockets under, whichever store holds them.
func CheckName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("FDNAME %q: want 1 to 255 bytes", name)
	}
	for i := range len(name) {
		if c := name[i]; c < ' ' || c > '~' || c == ':' {
			return fmt.Errorf("FDNAME %q: byte %#02x at %d is not printable ASCII, or is ':'", name, c, i)
		}
	}
	return nil
}

// Stored is what systemd handed this process back from its store, by
// name: every descriptor of LISTEN_FDS whose name keep says it wants.
func Stored(keep func(name string) bool) map[string]*os.File {
	out := map[string]*os.File{}
	for _, f := range systemd.ListenFDs() {
		if keep(f.Name()) {
			out[f.Name()] = f
		}
	}
	return out
}
