package endpoint

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

// TestWaiting: what a peer wrote and the host has not read is counted on
// unix and TCP streams, through a wrapper, and a connection that counts
// for itself is asked.
func TestWaiting(t *testing.T) {
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "unix" {
				addr = filepath.Join(t.TempDir(), "s")
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			c, err := net.Dial(network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if n, ok := Waiting(s); !ok || n != 0 {
				t.Fatalf("Waiting before a write = %d, %v; want 0, true", n, ok)
			}
			if _, err := c.Write(make([]byte, 1000)); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				n, ok := Waiting(wrapped{s})
				if ok && n == 1000 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("Waiting = %d, %v; want 1000, true", n, ok)
				}
				time.Sleep(time.Millisecond)
			}
			if _, err := s.Read(make([]byte, 400)); err != nil {
				t.Fatal(err)
			}
			if n, ok := Waiting(s); !ok || n != 600 {
				t.Fatalf("Waiting after reading 400 = %d, %v; want 600, true", n, ok)
			}
		})
	}
	if n, ok := Waiting(counted{}); !ok || n != 7 {
		t.Fatalf("Waiting of a connection that counts itself = %d, %v", n, ok)
	}
}

type wrapped struct{ net.Conn }

func (w wrapped) NetConn() net.Conn { return w.Conn }

type counted struct{ net.Conn }

func (counted) Waiting() int { return 7 }
