package guestinit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DefaultPath is the search path when the environment has none, as a
// shell's (and systemd's) default: an early guest's PID 1 often has none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// LookPath finds a command as a shell would: a name with a slash is taken
// as it is; any other is the first executable regular file of that name in
// the PATH of env (the command's environment), or DefaultPath without one.
// An empty PATH entry is the current directory, as in a shell.
func LookPath(name string, env []string) (string, error) {
	if name == "" {
		return "", errors.New("empty command name")
	}
	if strings.Contains(name, "/") {
		return name, nil
	}
	path, found := DefaultPath, false
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path, found = v, true
		}
	}
	var denied error
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if fi.Mode()&0o111 == 0 {
			denied = fmt.Errorf("%s: not executable: %w", p, fs.ErrPermission)
			continue
		}
		return p, nil
	}
	if denied != nil {
		return "", denied
	}
	where := "PATH=" + path
	if !found {
		where = "the default PATH " + DefaultPath
	}
	return "", fmt.Errorf("%s: not found in %s", name, where)
}
