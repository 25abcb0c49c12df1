package systemd

import (
	"os"
	"sync"

	"github.com/coreos/go-systemd/v22/activation"
)

// ListenFDs are the file descriptors systemd passed this process
// (LISTEN_FDS, for this pid), named as LISTEN_FDNAMES names them: the
// sockets of its socket units first, then what its file descriptor store
// held. They are taken once, and the environment cleared, so that no
// child takes them too.
var ListenFDs = sync.OnceValue(func() []*os.File { return activation.Files(true) })
