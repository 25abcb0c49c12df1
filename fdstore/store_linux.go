package fdstore

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// send writes one notification to the service manager, with fd (unless
// negative) as SCM_RIGHTS.
func send(path, state string, fd int) error {
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	return unix.Sendmsg(s, []byte(state), oob, &unix.SockaddrUnix{Name: path}, 0)
}

// WriteState writes b to a new memfd named name, for the store.
func WriteState(name string, b []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, fmt.Errorf("memfd: %w", err)
	}
	return f, nil
}

// ReadState reads a state memfd from its start, at most limit bytes.
func ReadState(f *os.File, limit int64) ([]byte, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(b)) > limit {
		err = fmt.Errorf("%s: more than %d bytes", f.Name(), limit)
	}
	return b, err
}
