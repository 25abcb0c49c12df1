package lowmem

import (
	"sync/atomic"
	"syscall"
)

func init() {
	unmapExecutable()
	go trimWhileStarting()
}

// settled ends the trimming while starting.
var settled atomic.Bool

// trimWhileStarting trims every startTrimEvery until Settle or
// startTrimFor: start-up (every library's init, then a role's set-up)
// touches much of the binary once, and fault-around maps whole large
// folios of it, so that without this the peak RSS is start-up's, not the
// process's.
func trimWhileStarting() {
	ts := syscall.NsecToTimespec(int64(startTrimEvery))
	for range startTrimFor / startTrimEvery {
		_ = syscall.Nanosleep(&ts, nil)
		if settled.Load() {
			return
		}
		unmapExecutable()
	}
}

const (
	startTrimEvery = 5_000_000 // ns
	startTrimFor   = 1_000_000_000
)

// Settle trims once more and ends the trimming while starting: the process
// is up, and what it touches from now on it uses.
func Settle() {
	settled.Store(true)
	TrimExecutable()
}

// TrimEvery keeps trimming the executable's read-only pages every ns
// nanoseconds for the rest of the process (the first call starts it; later
// ones do nothing). Where the binary cannot leave memory (an initramfs
// root) every page a burst touched stays cached, and each one touched
// again comes back with its cached neighbours: without this, the RSS of a
// long-running process grows toward whatever it ever ran, not what it
// runs. The page cache is left alone: on a disk a page unmapped here comes
// back without a read.
func TrimEvery(ns int64) {
	if !trimming.CompareAndSwap(false, true) {
		return
	}
	go func() {
		ts := syscall.NsecToTimespec(ns)
		for {
			_ = syscall.Nanosleep(&ts, nil)
			unmapExecutable()
		}
	}()
}

var trimming atomic.Bool

// TrimExecutable unmaps the executable's read-only pages (code and
// constants); the ones in use come back at their next touch.
func TrimExecutable() {
	unmapExecutable()
	dropCached()
}

// unmapExecutable drops this process's mappings of the executable's
// read-only pages, and asks for no readahead when they fault back.
func unmapExecutable() {
	for _, sp := range spans {
		for _, advice := range []uintptr{syscall.MADV_RANDOM, syscall.MADV_DONTNEED} {
			_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, sp[0], sp[1]-sp[0], advice)
		}
	}
}

// spans are the executable's read-only mappings, read once: they stay put.
var spans = readOnlySpans()

// dropCached asks the kernel to drop the executable's pages that no process
// maps from its page cache: a page touched again then comes alone, not
// with the neighbours fault-around maps (MADV_RANDOM does not stop it).
func dropCached() {
	fd, err := syscall.Open("/proc/self/exe", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer syscall.Close(fd)
	const posixFadvDontneed = 4
	_, _, _ = syscall.Syscall6(syscall.SYS_FADVISE64, uintptr(fd), 0, 0, posixFadvDontneed, 0, 0)
}

// readOnlySpans finds the read-only mappings of this process's executable
// (start, end), using nothing but syscall.
func readOnlySpans() (out [][2]uintptr) {
	exe := make([]byte, 4096)
	n, err := syscall.Readlink("/proc/self/exe", exe)
	if err != nil {
		return
	}
	exe = exe[:n]
	fd, err := syscall.Open("/proc/self/maps", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer syscall.Close(fd)
	buf := make([]byte, 0, 1<<16)
	for {
		if len(buf) == cap(buf) {
			return nil // an unexpectedly large map: leave it
		}
		k, err := syscall.Read(fd, buf[len(buf):cap(buf)])
		if k <= 0 || err != nil {
			break
		}
		buf = buf[:len(buf)+k]
	}
	for len(buf) > 0 {
		line := buf
		if i := indexByte(buf, '\n'); i >= 0 {
			line, buf = buf[:i], buf[i+1:]
		} else {
			buf = nil
		}
		// start-end perms offset dev inode path
		f := fields(line)
		if len(f) < 6 || string(f[5]) != string(exe) || len(f[1]) < 2 || f[1][1] == 'w' {
			continue
		}
		if start, end, ok := span(f[0]); ok {
			out = append(out, [2]uintptr{start, end})
		}
	}
	return out
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func fields(b []byte) [][]byte {
	var out [][]byte
	for i := 0; i < len(b); {
		for i < len(b) && b[i] == ' ' {
			i++
		}
		j := i
		for j < len(b) && b[j] != ' ' {
			j++
		}
		if j > i {
			out = append(out, b[i:j])
		}
		i = j
	}
	return out
}

// span parses "start-end" in hex.
func span(b []byte) (start, end uintptr, ok bool) {
	var v [2]uintptr
	k := 0
	for _, c := range b {
		switch {
		case c == '-' && k == 0:
			k = 1
		case c >= '0' && c <= '9':
			v[k] = v[k]<<4 | uintptr(c-'0')
		case c >= 'a' && c <= 'f':
			v[k] = v[k]<<4 | uintptr(c-'a'+10)
		default:
			return 0, 0, false
		}
	}
	return v[0], v[1], k == 1 && v[1] > v[0]
}
