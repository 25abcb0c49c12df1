package systemd

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestJournalHandler: each record is one line that starts with its
// journal priority and carries no time of its own; derived handlers
// (With) share the writer.
func TestJournalHandler(t *testing.T) {
	for _, json := range []bool{false, true} {
		var b bytes.Buffer
		log := slog.New(NewJournalHandler(&b, json, &slog.HandlerOptions{Level: slog.LevelDebug})).With("role", "r")
		log.Debug("d")
		log.Info("i", "k", 1)
		log.Warn("w")
		log.Error("e")
		lines := strings.Split(strings.TrimSpace(b.String()), "\n")
		want := []string{"<7>", "<6>", "<4>", "<3>"}
		if len(lines) != len(want) {
			t.Fatalf("json %v: %d lines, want %d:\n%s", json, len(lines), len(want), b.String())
		}
		for i, l := range lines {
			if !strings.HasPrefix(l, want[i]) || strings.Contains(l, "time") || !strings.Contains(l, "role") {
				t.Errorf("json %v: line %q, want it to start %s, with no time and the role", json, l, want[i])
			}
		}
	}
}

// TestJournalStream: JOURNAL_STREAM names the file's device and inode, or
// it is not the journal's stream.
func TestJournalStream(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dev, ino, ok := devIno(f)
	if !ok {
		t.Skip("no device and inode here")
	}
	for _, tt := range []struct {
		env  string
		want bool
	}{
		{fmt.Sprintf("%d:%d", dev, ino), true},
		{fmt.Sprintf("%d:%d", dev, ino+1), false},
		{"", false},
		{"garbage", false},
		{"1:x", false},
	} {
		t.Setenv("JOURNAL_STREAM", tt.env)
		if got := JournalStream(f); got != tt.want {
			t.Errorf("JOURNAL_STREAM=%q: %v, want %v", tt.env, got, tt.want)
		}
	}
}
