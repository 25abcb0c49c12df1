package guestinit

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, d := range []string{a, b} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path string, mode os.FileMode) {
		if err := os.WriteFile(path, []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(a, "agent"), 0o644) // not executable: passed over
	write(filepath.Join(b, "agent"), 0o755)
	write(filepath.Join(a, "only-plain"), 0o644)
	if err := os.Mkdir(filepath.Join(a, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := "PATH=" + a + ":" + b
	for _, tt := range []struct {
		name, env, want, err string
	}{
		{"agent", path, filepath.Join(b, "agent"), ""},
		{"/opt/x/agent", path, "/opt/x/agent", ""},
		{"./agent", path, "./agent", ""},
		{"only-plain", path, "", "not executable"},
		{"adir", path, "", "not found in " + path},
		{"sh", "", "", ""}, // the default PATH: wherever sh is
		{"", path, "", "empty command name"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var env []string
			if tt.env != "" {
				env = []string{"HOME=/", tt.env}
			}
			got, err := LookPath(tt.name, env)
			switch {
			case tt.err != "":
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("LookPath(%q) = %q, %v; want an error with %q", tt.name, got, err, tt.err)
				}
				if tt.err == "not executable" && !errors.Is(err, fs.ErrPermission) {
					t.Fatalf("not executable is not ErrPermission: %v", err)
				}
			case tt.name == "sh":
				if err != nil || !strings.HasSuffix(got, "/sh") {
					t.Fatalf("sh in the default PATH: %q, %v", got, err)
				}
			case err != nil || got != tt.want:
				t.Fatalf("LookPath(%q) = %q, %v; want %q", tt.name, got, err, tt.want)
			}
		})
	}
}
