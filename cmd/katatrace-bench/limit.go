package main

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"os"

	"golang.org/x/net/ipv4"
)

// The minimal framed pair: the design's limit, what any relay of this
// shape reaches on a machine. The guest reads datagrams with recvmmsg and
// writes them as length-prefixed frames on a unix stream; the host reads
// the frames and sends them with sendmmsg. No queue, no reconnect, no
// flush, no confirmation. The bench runs itself in these roles.

// limitGuest: recvmmsg from the UDP address in, frames to the socket sock.
func limitGuest(in, sock string) error {
	pc, err := net.ListenPacket("udp", in)
	if err != nil {
		return err
	}
	_ = pc.(*net.UDPConn).SetReadBuffer(8 << 20)
	c, err := net.Dial("unix", sock)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(c, 1<<20)
	r := ipv4.NewPacketConn(pc)
	msgs := make([]ipv4.Message, 64)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 65536)}
	}
	var hdr [4]byte
	for {
		n, err := r.ReadBatch(msgs, 0)
		if err != nil {
			return err
		}
		for _, m := range msgs[:n] {
			binary.BigEndian.PutUint32(hdr[:], uint32(m.N))
			_, _ = w.Write(hdr[:])
			_, _ = w.Write(m.Buffers[0][:m.N])
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
}

// limitHost: frames from the socket sock, sendmmsg to the UDP address out.
func limitHost(sock, out string) error {
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	uc, err := net.Dial("udp", out)
	if err != nil {
		return err
	}
	w := ipv4.NewPacketConn(uc.(*net.UDPConn))
	br := bufio.NewReaderSize(c, 1<<20)
	msgs := make([]ipv4.Message, 0, 64)
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = make([]byte, 65536)
	}
	var hdr [4]byte
	for {
		// Read a frame, then as many more as are already buffered.
		for len(msgs) < cap(msgs) && (len(msgs) == 0 || br.Buffered() >= 4) {
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				return err
			}
			b := bufs[len(msgs)][:binary.BigEndian.Uint32(hdr[:])]
			if _, err := io.ReadFull(br, b); err != nil {
				return err
			}
			msgs = append(msgs, ipv4.Message{Buffers: [][]byte{b}})
		}
		for off := 0; off < len(msgs); {
			k, err := w.WriteBatch(msgs[off:], 0)
			if err != nil && k <= 0 {
				k = 1 // the datagram failed: on with the next
			}
			off += k
		}
		msgs = msgs[:0]
	}
}
