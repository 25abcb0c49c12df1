package handover

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/katatrace/katatrace/fdstore"
	"golang.org/x/sys/unix"
)

const (
	// version is the handover protocol's (docs/protocol.md, "Rollouts").
	version = 1
	// perMessage is how many descriptors one message carries (the
	// kernel takes at most 253, SCM_MAX_FD).
	perMessage = 128
	// maxMessage bounds a message's bytes: perMessage names of at most
	// 255 bytes, quoted, with room.
	maxMessage = 64 << 10
	// maxHanded bounds what a successor takes in all.
	maxHanded = 1 << 20
	// MaxPath is the longest path an offer binds: a unix socket's
	// 107 bytes, less the suffix it is bound under until published.
	MaxPath = 107 - len(".tmp-") - 12
	// askTimeout bounds a successor's request, and each message after.
	askTimeout = 30 * time.Second
	// batchBytes bounds the names of one message, as JSON (a name of
	// printable ASCII takes at most twice its length, and its quotes).
	batchBytes = 32 << 10
)

var errClosed = errors.New("the other process closed the handover")

// dupFile is a close-on-exec copy of fd.
func dupFile(fd int, name string) (*os.File, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("fcntl", err)
	}
	return os.NewFile(uintptr(nfd), name), nil
}

// Offer waits at a unix socket for a successor of the same role, and
// gives it the store once asked (Give).
type Offer struct {
	path, role string
	tmp        string // where it is bound until published
	log        *slog.Logger
	ln         *net.UnixListener

	onAsk   func() error
	pending chan *net.UnixConn
	mu      sync.Mutex
	asking  map[*net.UnixConn]bool // requests being read, for Close
	// published: the socket is at path, its file dev and ino (to remove
	// only this one's).
	published bool
	dev, ino  uint64
	// given is set once a successor took everything; givenTo is its pid
	// (0 where its PID namespace hides it: another pod's).
	given   atomic.Bool
	givenTo atomic.Int64
	done    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

// NewOffer makes a socket to wait at path (an absolute path on the node,
// shared by both processes, at most MaxPath bytes; its directory is made
// if missing), bound beside it until Publish puts it in place. Only
// processes of the same user are answered; onAsk is called as each valid
// successor asks, and an error from it refuses that one (this process is
// stopping); one it takes waits for Give.
func NewOffer(path, role string, log *slog.Logger, onAsk func() error) (*Offer, error) {
	if len(path) > MaxPath {
		return nil, fmt.Errorf("%s: longer than %d bytes", path, MaxPath)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	// Not the pid for a unique name: it is 1 in every container.
	tmp := fmt.Sprintf("%s.tmp-%012x", path, rand.Uint64()>>16)
	_ = os.Remove(tmp)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: tmp, Net: "unixpacket"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		_ = ln.Close()
		_ = os.Remove(tmp)
		return nil, err
	}
	o := &Offer{path: path, tmp: tmp, role: role, log: log, ln: ln,
		onAsk: onAsk, asking: map[*net.UnixConn]bool{}, pending: make(chan *net.UnixConn, 4), done: make(chan struct{})}
	o.wg.Add(1)
	go o.accept()
	return o, nil
}

// Publish renames the socket over path, replacing what is there at once
// (a predecessor's socket, once this process took from it, or a stale
// one): the path is never missing for a successor, nor someone else's
// half-way.
func (o *Offer) Publish() error {
	var st unix.Stat_t
	err := os.Rename(o.tmp, o.path)
	if err == nil {
		err = unix.Stat(o.path, &st)
	}
	if err != nil {
		return err
	}
	o.mu.Lock()
	o.dev, o.ino, o.published = st.Dev, st.Ino, true
	o.mu.Unlock()
	return nil
}

func (o *Offer) accept() {
	defer o.wg.Done()
	delay := 5 * time.Millisecond
	for {
		c, err := o.ln.AcceptUnix()
		if err != nil {
			select {
			case <-o.done:
				return
			default:
			}
			// Out of descriptors, say: a successor asking now would
			// fail; one asking later must not.
			o.log.Error("handover socket: accepting a successor failed; trying again", "path", o.path, "err", err)
			select {
			case <-o.done:
				return
			case <-time.After(delay):
			}
			delay = min(2*delay, time.Second)
			continue
		}
		delay = 5 * time.Millisecond
		o.mu.Lock()
		o.asking[c] = true
		o.mu.Unlock()
		o.wg.Add(1)
		go func() {
			defer o.wg.Done()
			o.ask(c)
		}()
	}
}

// ask reads a successor's request, and queues it for Give, or refuses it
// saying why.
func (o *Offer) ask(c *net.UnixConn) {
	_ = c.SetDeadline(time.Now().Add(askTimeout))
	req, err := o.request(c)
	o.mu.Lock()
	delete(o.asking, c)
	o.mu.Unlock()
	if err == nil && o.given.Load() {
		err = fmt.Errorf("this process handed over already (to pid %d)", o.givenTo.Load())
	}
	if err == nil {
		err = o.onAsk()
	}
	if err == nil {
		select {
		case o.pending <- c:
			_ = c.SetDeadline(time.Time{})
			o.log.Info("a successor asks to take over", "pid", req.PID, "path", o.path)
			return
		default:
			err = errors.New("other successors are waiting already")
		}
	}
	o.log.Warn("handover refused", "path", o.path, "pid", req.PID, "err", err)
	_ = write(c, message{Error: err.Error()}, nil)
	_ = c.Close()
}

// request reads and checks a successor's request.
func (o *Offer) request(c *net.UnixConn) (message, error) {
	// Read first: a request left unread would turn the refusal into a
	// reset.
	m, _, err := read(c, 0)
	if err == nil {
		err = checkPeer(c)
	}
	switch {
	case err != nil:
		return m, fmt.Errorf("the request: %w", err)
	case m.Handover != version:
		return m, fmt.Errorf("handover protocol version %d, and this process speaks %d", m.Handover, version)
	case m.Role != o.role:
		return m, fmt.Errorf("this process is a %s, not a %s: give each role a socket of its own", o.role, m.Role)
	}
	return m, nil
}

// Give gives the store's contents to a successor that asked: to each in
// turn until one says it serves them (the store then holds copies nobody
// needs: close it), or until ctx ends with nobody waiting (one waiting
// then still gets them). A successor that goes away first took nothing:
// the store is whole for the next; stale is called where it had
// everything (and may have read from the connections). If none asks
// within wait after one failed, Give returns ErrNoSuccessor.
func (o *Offer) Give(ctx context.Context, s *Store, stale func(), wait time.Duration) error {
	var timeout <-chan time.Time // after a successor failed
	for {
		var c *net.UnixConn
		select {
		case c = <-o.pending:
		default:
			select {
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-o.done:
				return errors.New("handover socket closed")
			case <-timeout:
				return ErrNoSuccessor
			case c = <-o.pending:
			}
		}
		stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
		pid, all, err := give(c, s)
		stop()
		_ = c.Close()
		if err != nil && all && stale != nil {
			stale()
		}
		if err == nil {
			o.givenTo.Store(int64(pid))
			o.given.Store(true)
			o.log.Info("handed over to the successor", "pid", pid, "descriptors", s.Len())
			return nil
		}
		o.log.Error("handover to a successor failed; the next that asks gets everything", "pid", pid, "err", err, "waiting", wait)
		timeout = time.After(wait)
	}
}

// ErrNoSuccessor is Give's when no successor asked again within its wait
// after one failed.
var ErrNoSuccessor = errors.New("no successor asked again")

// give sends every descriptor of s over c, and waits for the successor
// to say it serves them; all says whether it had them all.
func give(c *net.UnixConn, s *Store) (pid int, all bool, err error) {
	if cred, err := peerCred(c); err == nil {
		pid = int(cred.Pid) // 0 where its PID namespace hides it
	}
	_ = c.SetDeadline(time.Now().Add(askTimeout))
	names, files := s.Snapshot()
	for i := 0; i < len(names); {
		j, size := i, 0
		for j < len(names) && j-i < perMessage && size+2*len(names[j])+3 <= batchBytes {
			size += 2*len(names[j]) + 3
			j++
		}
		if err := write(c, message{Names: names[i:j]}, files[i:j]); err != nil {
			return pid, false, err
		}
		i = j
	}
	n := len(names)
	if err := write(c, message{Done: &n}, nil); err != nil {
		return pid, false, err
	}
	// However long its start takes: a successor that goes away is an
	// end of file here (the kernel closes its sockets), and this
	// process's own stop ends the wait (Give).
	_ = c.SetDeadline(time.Time{})
	m, _, err := read(c, 0)
	switch {
	case err != nil:
		return pid, true, fmt.Errorf("waiting for the successor to say it serves them: %w", err)
	case m.Error != "":
		return pid, true, fmt.Errorf("the successor: %s", m.Error)
	case m.Taken == nil || *m.Taken != n:
		return pid, true, fmt.Errorf("the successor did not say it serves the %d descriptors", n)
	}
	return pid, true, nil
}

// Close stops waiting for a successor, and removes the socket's file if
// it is still this process's and nobody took over.
func (o *Offer) Close() error {
	o.once.Do(func() {
		close(o.done)
		_ = o.ln.Close()
		// Handed over, the path is the successor's to rename its own
		// socket over (a stale file is no predecessor); else, if still
		// this one's, it goes.
		var st unix.Stat_t
		o.mu.Lock()
		switch {
		case !o.published:
			_ = os.Remove(o.tmp)
		case !o.given.Load() && unix.Stat(o.path, &st) == nil && st.Dev == o.dev && st.Ino == o.ino:
			_ = os.Remove(o.path)
		}
		for c := range o.asking {
			_ = c.SetDeadline(time.Now()) // a request still being read
		}
		o.mu.Unlock()
		o.wg.Wait()
		for len(o.pending) > 0 {
			c := <-o.pending
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_ = write(c, message{Error: "this process is stopping without handing over: start afresh once it is gone"}, nil)
			_ = c.Close()
		}
	})
	return nil
}

// Taken is what a successor took: the descriptors by name, and the
// predecessor's pid (0 where its PID namespace hides it). The
// predecessor keeps its copies until Commit.
type Taken struct {
	Files map[string]*os.File
	PID   int
	c     *net.UnixConn
	n     int
}

// Commit tells the predecessor that this process serves everything now:
// it lets its copies go. Before it, this process's stop or crash leaves
// them whole with the predecessor, for the next successor.
func (t *Taken) Commit() error {
	defer t.c.Close()
	_ = t.c.SetDeadline(time.Now().Add(askTimeout))
	n := t.n
	return write(t.c, message{Taken: &n}, nil)
}

// Abandon lets the predecessor know this process will not serve what it
// took (it closes the connection): the next successor gets it all.
func (t *Taken) Abandon() { _ = t.c.Close() }

// Take asks the process waiting at path for everything it keeps, as role.
// Nothing listening there (no file, or a stale one) is no predecessor:
// nil and no error. A Taken must be committed or abandoned.
func Take(ctx context.Context, path, role string) (*Taken, error) {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	t := &Taken{Files: map[string]*os.File{}, c: c}
	fail := func(err error) (*Taken, error) {
		for _, f := range t.Files {
			_ = f.Close()
		}
		_ = c.Close()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		}
		return nil, err
	}
	if cred, err := peerCred(c); err == nil {
		t.PID = int(cred.Pid)
	}
	if err := checkPeer(c); err != nil {
		return fail(err)
	}
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	if err := write(c, message{Handover: version, Role: role, PID: os.Getpid()}, nil); err != nil {
		return fail(err)
	}
	for {
		m, got, err := read(c, perMessage)
		if err != nil {
			return fail(err)
		}
		switch {
		case m.Error != "":
			closeAll(got)
			return fail(fmt.Errorf("the process there refused: %s", m.Error))
		case m.Done != nil:
			closeAll(got)
			if *m.Done != len(t.Files) {
				return fail(fmt.Errorf("it said it sent %d descriptors, and %d came", *m.Done, len(t.Files)))
			}
			t.n = len(t.Files)
			_ = c.SetDeadline(time.Time{})
			return t, nil
		case m.Names == nil:
			closeAll(got)
			return fail(errors.New("a message that is neither descriptors nor their end"))
		case len(m.Names) != len(got):
			closeAll(got)
			return fail(fmt.Errorf("a message named %d descriptors and carried %d", len(m.Names), len(got)))
		case len(t.Files)+len(got) > maxHanded:
			closeAll(got)
			return fail(fmt.Errorf("more than %d descriptors", maxHanded))
		}
		for i, name := range m.Names {
			err := fdstore.CheckName(name)
			if err == nil && t.Files[name] != nil {
				err = fmt.Errorf("name %q sent twice", name)
			}
			if err != nil {
				closeAll(got[i:])
				return fail(err)
			}
			t.Files[name] = os.NewFile(uintptr(got[i]), name)
		}
	}
}

func closeAll(fds []int) {
	for _, fd := range fds {
		_ = unix.Close(fd)
	}
}

// write sends m, with files' descriptors (read without touching their
// blocking mode: they are live sockets).
func write(c *net.UnixConn, m message, files []*os.File) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // a name's bytes at most doubled (batchBytes)
	if err := enc.Encode(m); err != nil {
		return err
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			rc, err := f.SyscallConn()
			if err != nil {
				return err
			}
			if err := rc.Control(func(fd uintptr) { fds[i] = int(fd) }); err != nil {
				return err
			}
		}
		oob = unix.UnixRights(fds...)
	}
	n, oobn, err := c.WriteMsgUnix(b, oob, nil)
	switch {
	case err != nil:
		return err
	case n != len(b) || oobn != len(oob):
		return errors.New("a message went short")
	}
	// The descriptors must stay open until the kernel took them, which
	// it did in sendmsg.
	for _, f := range files {
		runtime.KeepAlive(f)
	}
	return nil
}

// read receives one message, with at most maxFDs descriptors (more: an
// error, the message's all closed).
func read(c *net.UnixConn, maxFDs int) (message, []int, error) {
	b := make([]byte, maxMessage)
	oob := make([]byte, unix.CmsgSpace(max(maxFDs, 1)*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(b, oob)
	var m message
	if errors.Is(err, io.EOF) {
		err = errClosed
	}
	if err != nil {
		return m, nil, err
	}
	var fds []int
	if oobn > 0 {
		cms, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return m, nil, fmt.Errorf("control message: %w", err)
		}
		for i := range cms {
			got, err := unix.ParseUnixRights(&cms[i])
			if err == nil {
				fds = append(fds, got...)
			}
		}
	}
	switch {
	case flags&unix.MSG_CTRUNC != 0:
		closeAll(fds)
		return m, nil, fmt.Errorf("a message carried more than %d descriptors", maxFDs)
	case flags&unix.MSG_TRUNC != 0:
		closeAll(fds)
		return m, nil, fmt.Errorf("a message of more than %d bytes", maxMessage)
	case n == 0:
		closeAll(fds)
		return m, nil, errClosed
	case len(fds) > maxFDs:
		closeAll(fds)
		return m, nil, fmt.Errorf("%d descriptors where %d were allowed", len(fds), maxFDs)
	}
	m, err = decode(b[:n])
	if err != nil {
		closeAll(fds)
		return m, nil, err
	}
	return m, fds, nil
}

func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}

// checkPeer refuses a process of another user: it could take every
// guest's connection, or hand this one sockets of its choosing.
func checkPeer(c *net.UnixConn) error {
	cred, err := peerCred(c)
	if err != nil {
		return fmt.Errorf("the peer's credentials: %w", err)
	}
	if uid := os.Geteuid(); int(cred.Uid) != uid {
		return fmt.Errorf("the process at the other end (pid %d) runs as uid %d, and this one as %d", cred.Pid, cred.Uid, uid)
	}
	return nil
}
