package guestrelay

import (
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/katatrace/katatrace/wire"
	"golang.org/x/sys/unix"
)

// mmsghdr is struct mmsghdr of recvmmsg(2).
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// batchReader reads up to len(bufs) datagrams per recvmmsg(2), asking for
// no source addresses, so that a read allocates nothing (x/net's ReadBatch
// allocates an address per datagram). Each datagram comes with the time
// the kernel took it in (SO_TIMESTAMPNS), so that a stop can tell what was
// waiting when it began from what came after.
type batchReader struct {
	rc      syscall.RawConn
	hs      []mmsghdr
	iovs    []unix.Iovec
	bufs    [][]byte
	ctrls   [][]byte // each datagram's control message: its timestamp
	got     [][]byte // the datagrams of the last read
	n       int
	errno   syscall.Errno
	fn      func(fd uintptr) bool // made once: a closure per call would allocate
	stamped bool                  // the socket timestamps what it takes in
	// after, once set (unix nanoseconds), makes read say errLate when a
	// datagram came in after it; before is when the last recvmmsg began.
	after, before int64
	// lastDropped is the kernel's drop count as last read.
	lastDropped atomic.Uint64
}

var timespecSize = int(unsafe.Sizeof(unix.Timespec{}))

func newBatchReader(c syscall.Conn, n int) (*batchReader, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &batchReader{rc: rc, hs: make([]mmsghdr, n), iovs: make([]unix.Iovec, n), bufs: make([][]byte, n),
		ctrls: make([][]byte, n), got: make([][]byte, n)}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1) }); err == nil && serr == nil {
		r.stamped = true
	}
	for i := range n {
		r.bufs[i] = make([]byte, wire.MaxDatagram+1)
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(len(r.bufs[i]))
		r.hs[i].hdr.Iov = &r.iovs[i]
		r.hs[i].hdr.SetIovlen(1)
		if r.stamped {
			r.ctrls[i] = make([]byte, unix.CmsgSpace(timespecSize))
			r.hs[i].hdr.Control = &r.ctrls[i][0]
		}
	}
	r.fn = func(fd uintptr) bool {
		for i := range r.ctrls {
			r.hs[i].hdr.SetControllen(len(r.ctrls[i])) // the kernel set it to what it wrote
		}
		if r.after != 0 {
			r.before = time.Now().UnixNano()
		}
		k, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hs[0])), uintptr(len(r.hs)), unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EAGAIN || e == unix.EINTR {
			return false // wait until readable (or the deadline)
		}
		r.n, r.errno = int(k), e
		if e != 0 {
			r.n = 0
		}
		return true
	}
	return r, nil
}

// read hands the datagrams of one batch to send; all of them, and then
// errLate if one came in after r.after.
func (r *batchReader) read(send func([][]byte)) error {
	if err := r.rc.Read(r.fn); err != nil {
		return err
	}
	if r.errno != 0 {
		return r.errno
	}
	late := false
	for i := range r.n {
		r.got[i] = r.bufs[i][:r.hs[i].len]
		// A datagram that came in before the socket stamped (before the
		// relay started, or while the kernel turns stamping on) is
		// stamped as it is read: only a stamp before the read began is
		// the time it came in.
		if t := r.stamp(i); r.after != 0 && t > r.after && t < r.before {
			late = true
		}
	}
	send(r.got[:r.n])
	if late {
		return errLate
	}
	return nil
}

// stamp is when datagram i of the last read came in (unix nanoseconds),
// or 0 if the kernel did not say.
func (r *batchReader) stamp(i int) int64 {
	h := &r.hs[i].hdr
	if int(h.Controllen) < unix.CmsgLen(timespecSize) {
		return 0
	}
	c := (*unix.Cmsghdr)(unsafe.Pointer(&r.ctrls[i][0]))
	if c.Level != unix.SOL_SOCKET || c.Type != unix.SCM_TIMESTAMPNS {
		return 0
	}
	return (*unix.Timespec)(unsafe.Pointer(&r.ctrls[i][unix.CmsgLen(0)])).Nano()
}

// cutoff makes read say errLate once it reads a datagram that came in
// after t; false if the socket cannot say when a datagram came in.
func (r *batchReader) cutoff(t time.Time) bool {
	r.after = t.UnixNano()
	return r.stamped
}

// dropped is how many datagrams the kernel dropped at this socket since it
// was made, its buffer full (SO_MEMINFO); once the socket is closed, the
// last count read.
func (r *batchReader) dropped() uint64 {
	var mem [unix.SK_MEMINFO_VARS]uint32
	_ = r.rc.Control(func(fd uintptr) {
		l := uint32(unsafe.Sizeof(mem))
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO, uintptr(unsafe.Pointer(&mem[0])), uintptr(unsafe.Pointer(&l)), 0)
		if e == 0 {
			r.lastDropped.Store(uint64(mem[unix.SK_MEMINFO_DROPS]))
		}
	})
	return r.lastDropped.Load()
}
