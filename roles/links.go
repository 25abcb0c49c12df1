package roles

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

type linksCmd struct {
	Dir    string `arg:"" help:"Directory to create the symlinks in (it must exist)." type:"existingdir"`
	Target string `help:"What the links point to. Default: this binary, by its bare name when it sits in DIR." placeholder:"PATH"`
}

// Run creates or corrects one symlink per role. A link already right is
// left alone; a symlink pointing elsewhere is replaced atomically; a file
// that is not a symlink is never overwritten.
func (l *linksCmd) Run(rc *RunContext) error {
	target := l.Target
	if target == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this binary: %w", err)
		}
		if exe, err = filepath.EvalSymlinks(exe); err != nil {
			return fmt.Errorf("find this binary: %w", err)
		}
		dir, _ := filepath.Abs(l.Dir)
		if real, err := filepath.EvalSymlinks(dir); err == nil && real == filepath.Dir(exe) {
			target = filepath.Base(exe)
		} else {
			target = exe
		}
	}
	var errs []error
	created := 0
	for _, r := range All() {
		path := filepath.Join(l.Dir, r.Name)
		cur, err := os.Readlink(path)
		switch {
		case err == nil && cur == target:
			continue
		case err == nil, errors.Is(err, fs.ErrNotExist):
		default:
			errs = append(errs, fmt.Errorf("%s exists and is not a symlink; not replacing it", path))
			continue
		}
		tmp := path + ".katatrace-tmp"
		_ = os.Remove(tmp)
		if err := os.Symlink(target, tmp); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Rename(tmp, path); err != nil {
			_ = os.Remove(tmp)
			errs = append(errs, err)
			continue
		}
		created++
		rc.Log.Info("symlink created", "link", path, "target", target)
	}
	rc.Log.Info("role symlinks in place", "dir", l.Dir, "created", created, "roles", len(All()))
	return errors.Join(errs...)
}
