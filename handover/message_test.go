package handover

import (
	"strings"
	"testing"
)

var decodeTests = []struct {
	name, in, err string
}{
	{"request", `{"handover":1,"role":"kata-trace-forwarder","pid":7}`, ""},
	{"names", `{"names":["kt-l.a","kt-m.1"]}`, ""},
	{"done", `{"done":0}`, ""},
	{"taken", `{"taken":3}`, ""},
	{"refusal", `{"error":"no"}`, ""},
	{"not JSON", `handover please`, "not a handover message"},
	{"unknown field", `{"handover":1,"role":"x","fds":[3]}`, "unknown field"},
	{"two kinds", `{"done":1,"taken":1}`, "2 kinds"},
	{"no kind", `{}`, "0 kinds"},
	{"negative count", `{"done":-1}`, "negative"},
	{"negative pid", `{"handover":1,"role":"x","pid":-2}`, "negative"},
	{"empty batch", `{"names":[]}`, "empty batch"},
	{"trailing", `{"done":1}{"done":2}`, "more after"},
}

func TestDecode(t *testing.T) {
	for _, tt := range decodeTests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decode([]byte(tt.in))
			switch {
			case tt.err == "" && err != nil:
				t.Fatalf("decode(%s): %v", tt.in, err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("decode(%s) = %v, want an error saying %q", tt.in, err, tt.err)
			}
		})
	}
}

// FuzzDecode: whatever a peer sends is a message of one kind or an
// error, never a panic.
func FuzzDecode(f *testing.F) {
	for _, tt := range decodeTests {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decode(b)
		if err != nil {
			return
		}
		if m.Names != nil && len(m.Names) == 0 || m.Done != nil && *m.Done < 0 || m.Taken != nil && *m.Taken < 0 {
			t.Fatalf("decode(%q) took %+v", b, m)
		}
	})
}
