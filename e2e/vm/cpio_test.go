package vm

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// cpioWriter writes a newc ("070701") archive, the format the kernel
// unpacks as initramfs.
type cpioWriter struct {
	w   io.Writer
	ino int
	err error
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
	sIFCHR = 0o020000
)

func (c *cpioWriter) entry(name string, mode int, data []byte, rdevMajor, rdevMinor int) {
	if c.err != nil {
		return
	}
	c.ino++
	nlink := 1
	if mode&sIFDIR != 0 {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	buf := append([]byte(hdr), name...)
	buf = append(buf, 0)
	buf = pad4(buf)
	buf = pad4(append(buf, data...))
	_, c.err = c.w.Write(buf)
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func (c *cpioWriter) dir(name string) { c.entry(name, sIFDIR|0o755, nil, 0, 0) }

func (c *cpioWriter) file(name, from string) {
	b, err := os.ReadFile(from)
	if err != nil {
		c.err = err
		return
	}
	c.entry(name, sIFREG|0o755, b, 0, 0)
}

func (c *cpioWriter) symlink(name, target string) { c.entry(name, sIFLNK|0o777, []byte(target), 0, 0) }

func (c *cpioWriter) chardev(name string, major, minor int) {
	c.entry(name, sIFCHR|0o600, nil, major, minor)
}

func (c *cpioWriter) close() error {
	c.entry("TRAILER!!!", 0, nil, 0, 0)
	return c.err
}

// writeInitramfs lays out the guest: the katatrace binary, its init
// symlink, the agent, and the mount points and console node init needs.
func writeInitramfs(path, katatrace, agent string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	c := &cpioWriter{w: f}
	for _, d := range []string{"bin", "dev", "proc", "sys", "run", "tmp"} {
		c.dir(d)
	}
	// The kernel opens /dev/console for init's stdin, stdout and stderr
	// before devtmpfs exists.
	c.chardev("dev/console", 5, 1)
	c.file("bin/katatrace", katatrace)
	c.symlink("bin/kata-agent-tracer", "katatrace")
	c.file("bin/agent", agent)
	if err := c.close(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return nil
}

func firstLine(s, substr string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			return l
		}
	}
	return ""
}
