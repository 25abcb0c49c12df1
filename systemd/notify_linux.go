package systemd

import (
	"context"
	"errors"

	"github.com/mdlayher/vsock"
)

// notifyVsock sends one state over a vsock stream, the type every VMM that
// takes guest notifications accepts; the VMM reads to the end of stream.
func notifyVsock(ctx context.Context, a NotifyAddr, state string) error {
	if a.Type == "dgram" || a.Type == "seqpacket" {
		return errors.New("only vsock stream sockets are supported; use NOTIFY_SOCKET=vsock-stream:CID:PORT")
	}
	c, err := vsock.DialContext(ctx, a.CID, a.Port, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetWriteDeadline(dl)
	}
	_, err = c.Write([]byte(state))
	return err
}
