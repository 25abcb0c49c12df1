//go:build !linux

package endpoint

import "net"

// acceptBacklog is only supported on Linux: elsewhere a closed listener's
// backlog is refused, as the system does.
func acceptBacklog(net.Listener) []net.Conn { return nil }
