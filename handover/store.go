package handover

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"syscall"
)

// Store keeps a copy of each socket it is given, by name, as systemd's
// file descriptor store does, for Offer to give a successor. It has no
// size limit: the process's own descriptor limit is its bound.
type Store struct {
	mu    sync.Mutex
	files map[string]*os.File
}

// NewStore is an empty store.
func NewStore() *Store { return &Store{files: map[string]*os.File{}} }

// Keep keeps a copy of sock's descriptor under name, replacing what name
// held.
func (s *Store) Keep(name string, sock syscall.Conn) error {
	rc, err := sock.SyscallConn()
	if err != nil {
		return err
	}
	var f *os.File
	var derr error
	if err := rc.Control(func(fd uintptr) { f, derr = dupFile(int(fd), name) }); err != nil {
		return err
	}
	if derr != nil {
		return fmt.Errorf("keep %s: %w", name, derr)
	}
	s.put(name, f)
	return nil
}

// KeepFile keeps a copy of f under name.
func (s *Store) KeepFile(name string, f *os.File) error {
	return s.Keep(name, f)
}

func (s *Store) put(name string, f *os.File) {
	s.mu.Lock()
	old := s.files[name]
	s.files[name] = f
	s.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
}

// Forget closes name's copy.
func (s *Store) Forget(name string) error {
	s.mu.Lock()
	f := s.files[name]
	delete(s.files, name)
	s.mu.Unlock()
	if f != nil {
		return f.Close()
	}
	return nil
}

// Len is how many descriptors the store holds.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.files)
}

// Max is 0: no limit of the store's own.
func (s *Store) Max() int { return 0 }

// File is name's copy, or nil; it stays the store's.
func (s *Store) File(name string) *os.File {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.files[name]
}

// Close closes every copy: once a successor holds its own, or when
// nobody will (the process ends without one).
func (s *Store) Close() error {
	s.mu.Lock()
	files := s.files
	s.files = map[string]*os.File{}
	s.mu.Unlock()
	for _, f := range files {
		_ = f.Close()
	}
	return nil
}

// Snapshot is the store's contents in name order: the files stay the
// store's.
func (s *Store) Snapshot() ([]string, []*os.File) {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := slices.Sorted(maps.Keys(s.files))
	files := make([]*os.File, len(names))
	for i, n := range names {
		files[i] = s.files[n]
	}
	return names, files
}
