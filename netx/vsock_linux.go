package netx

import (
	"context"
	"net"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

func listenVsock(a Addr) (net.Listener, error) {
	cid := a.CID
	if a.AnyCID {
		cid = unix.VMADDR_CID_ANY
	}
	return vsock.ListenContextID(cid, a.Port, nil)
}

func dialVsock(ctx context.Context, a Addr) (net.Conn, error) {
	return vsock.DialContext(ctx, a.CID, a.Port, nil)
}
