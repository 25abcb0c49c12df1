package roles

import (
	"slices"
	"strings"
	"testing"
)

var wordTests = []struct {
	in   string
	want []string
	bad  bool
}{
	{"/bin/sync", []string{"/bin/sync"}, false},
	{"  /bin/systemctl   --force poweroff ", []string{"/bin/systemctl", "--force", "poweroff"}, false},
	{`/bin/echo "a b" 'c "d"' e\ f`, []string{"/bin/echo", "a b", `c "d"`, "e f"}, false},
	{`/bin/echo ""`, []string{"/bin/echo", ""}, false},
	{`"unterminated`, nil, true},
	{`trailing\`, nil, true},
}

func TestSplitWords(t *testing.T) {
	for _, tt := range wordTests {
		got, err := splitWords(tt.in)
		if (err != nil) != tt.bad || !slices.Equal(got, tt.want) {
			t.Errorf("splitWords(%q) = %q, %v", tt.in, got, err)
		}
	}
}

func FuzzSplitWords(f *testing.F) {
	for _, tt := range wordTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		words, err := splitWords(s)
		if err != nil {
			return
		}
		// Without quotes or backslashes, it is a split on blanks.
		blank := func(r rune) bool { return r == ' ' || r == '\t' || r == '\n' }
		if plain := !strings.ContainsAny(s, `"'\`); plain && !slices.Equal(words, strings.FieldsFunc(s, blank)) {
			t.Fatalf("%q split to %q, want %q", s, words, strings.FieldsFunc(s, blank))
		}
	})
}

var sizeTests = []struct {
	in   string
	want ByteSize
	bad  bool
}{
	{"4194304", 4 << 20, false},
	{"4MiB", 4 << 20, false},
	{"4M", 4 << 20, false},
	{"512KiB", 512 << 10, false},
	{"1GiB", 1 << 30, false},
	{"2MB", 2000000, false},
	{" 8 KiB ", 8 << 10, false},
	{"lots", 0, true},
	{"-1", 0, true},
	{"2TiB", 0, true},
	{"99999999999GiB", 0, true},
	{"", 0, true},
}

func TestByteSize(t *testing.T) {
	for _, tt := range sizeTests {
		var b ByteSize
		err := b.UnmarshalText([]byte(tt.in))
		if (err != nil) != tt.bad || (!tt.bad && b != tt.want) {
			t.Errorf("%q = %d, %v; want %d", tt.in, b, err, tt.want)
		}
		if err != nil && !strings.Contains(err.Error(), "4MiB") {
			t.Errorf("error %q shows no example", err)
		}
	}
}

func FuzzByteSize(f *testing.F) {
	for _, tt := range sizeTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var b ByteSize
		if err := b.UnmarshalText([]byte(s)); err != nil {
			return
		}
		if b < 0 || b > 1<<40 {
			t.Fatalf("%q gave %d", s, b)
		}
		var again ByteSize
		if err := again.UnmarshalText([]byte(b.String())); err != nil || again != b {
			t.Fatalf("%q → %d → %q → %d, %v", s, b, b.String(), again, err)
		}
	})
}
