package roles

import (
	"fmt"
	"strings"

	"github.com/alecthomas/kong"
)

// yesNo is a switch that may be given a value: bare (--dump-only) it is
// true, as Kata's before 3.19; --dump-only=false, or the value as the next
// argument (--dump-only true), as clap 4 makes Kata 3.19+'s take one. Kata
// read any value there as true, even false; here a value must say yes or
// no, and means what it says.
type yesNo bool

// boolWords are the values a yesNo takes, as kong's and systemd's
// booleans read them.
var boolWords = map[string]bool{"true": true, "yes": true, "on": true, "1": true, "false": false, "no": false, "off": false, "0": false}

func (b *yesNo) Decode(ctx *kong.DecodeContext) error {
	t := ctx.Scan.Peek()
	switch t.Type {
	case kong.FlagValueToken: // --flag=VALUE, or its environment twin
	case kong.UntypedToken, kong.PositionalArgumentToken:
		// No role that has a yesNo takes positional arguments: a
		// next argument that is no flag is the value.
		if v, ok := t.Value.(string); !ok || strings.HasPrefix(v, "-") {
			*b = true
			return nil
		}
	default:
		*b = true
		return nil
	}
	t = ctx.Scan.Pop()
	if v, ok := t.Value.(bool); ok {
		*b = yesNo(v)
		return nil
	}
	s := fmt.Sprint(t.Value)
	v, ok := boolWords[strings.ToLower(strings.TrimSpace(s))]
	if !ok {
		return fmt.Errorf("%q is not a yes or no: give true or false (yes/no, on/off, 1/0), or the flag alone for true", s)
	}
	*b = yesNo(v)
	return nil
}

// IsBool makes help show the flag without a value, and lets it be given
// bare.
func (b yesNo) IsBool() bool { return true }
