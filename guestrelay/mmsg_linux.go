package guestrelay

import (
	"net"
	"sync/atomic"
	"syscall"
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
// allocates an address per datagram).
type batchReader struct {
	rc    syscall.RawConn
	hs    []mmsghdr
	iovs  []unix.Iovec
	bufs  [][]byte
	got   [][]byte // the datagrams of the last read
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool // made once: a closure per call would allocate
	// lastDropped is the kernel's drop count as last read.
	lastDropped atomic.Uint64
}

func newBatchReader(c *net.UDPConn, n int) (*batchReader, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &batchReader{rc: rc, hs: make([]mmsghdr, n), iovs: make([]unix.Iovec, n), bufs: make([][]byte, n), got: make([][]byte, n)}
	for i := range n {
		r.bufs[i] = make([]byte, wire.MaxDatagram+1)
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(len(r.bufs[i]))
		r.hs[i].hdr.Iov = &r.iovs[i]
		r.hs[i].hdr.SetIovlen(1)
	}
	r.fn = func(fd uintptr) bool {
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

// read hands the datagrams of one batch to send.
func (r *batchReader) read(send func([][]byte)) error {
	if err := r.rc.Read(r.fn); err != nil {
		return err
	}
	if r.errno != 0 {
		return r.errno
	}
	for i := range r.n {
		r.got[i] = r.bufs[i][:r.hs[i].len]
	}
	send(r.got[:r.n])
	return nil
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
