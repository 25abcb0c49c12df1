package roles

import (
	"slices"
	"testing"
)

func TestSplitWords(t *testing.T) {
	for _, tt := range []struct {
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
	} {
		got, err := splitWords(tt.in)
		if (err != nil) != tt.bad || !slices.Equal(got, tt.want) {
			t.Errorf("splitWords(%q) = %q, %v", tt.in, got, err)
		}
	}
}
