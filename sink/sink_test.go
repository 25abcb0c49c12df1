package sink

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/katatrace/katatrace/guestid"
)

var escapeTests = []struct{ in, want string }{
	{"hello", "hello"},
	{"hello\n", "hello"},
	{"hello\r\n", "hello"},
	{"two\nlines\n", `two\nlines`},
	{"red \x1b[31mtext\x1b[0m", `red \x1b[31mtext\x1b[0m`},
	{"bell\a and cr\r", `bell\x07 and cr\r`},
	{"tab\tstays", "tab\tstays"},
	{`back\slash`, `back\\slash`},
	{"c1 \u009b2J", `c1 \u009b2J`},
	{"bidi \u202ecba", `bidi \u202ecba`},
	{"bad utf8 \xff\xfe", `bad utf8 \xff\xfe`},
	{"del \x7f", `del \x7f`},
	{"日本語 ok", "日本語 ok"},
	{"", ""},
	{"\n", ""},
}

func TestAppendEscaped(t *testing.T) {
	for _, tt := range escapeTests {
		t.Run(tt.in, func(t *testing.T) {
			if got := string(AppendEscaped(nil, []byte(tt.in))); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func FuzzAppendEscaped(f *testing.F) {
	for _, tt := range escapeTests {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out := AppendEscaped(nil, in)
		if !utf8.Valid(out) {
			t.Fatalf("output is not UTF-8: %q", out)
		}
		for _, r := range string(out) {
			if (r < 0x20 && r != '\t') || r == 0x7f || (r >= 0x80 && r <= 0x9f) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
				t.Fatalf("control character %U passed through: %q", r, out)
			}
		}
	})
}

func TestLineSink(t *testing.T) {
	var b bytes.Buffer
	s := NewLineSink(&b)
	for _, m := range []string{"one\n", "two", "\x1b]0;pwned\x07three\n"} {
		if err := s.Send([]byte(m), guestid.Named("vsock:vm(3):1024")); err != nil {
			t.Fatal(err)
		}
	}
	want := "vsock:vm(3):1024: one\nvsock:vm(3):1024: two\nvsock:vm(3):1024: \\x1b]0;pwned\\x07three\n"
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
	if strings.Count(b.String(), "\n") != 3 {
		t.Fatal("not one line per message")
	}
}
