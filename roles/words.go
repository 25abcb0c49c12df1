package roles

import (
	"errors"
	"strings"
)

// splitWords splits a command line into words the way systemd's ExecStop
// does, without a shell: on blanks, with single and double quotes grouping
// and a backslash escaping the next character.
func splitWords(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	var quote byte
	escaped := false
	// Bytes, not runes: every special character is ASCII, and other bytes,
	// valid UTF-8 or not, pass through unchanged.
	for i := 0; i < len(s); i++ {
		r := s[i]
		switch {
		case escaped:
			w.WriteByte(r)
			escaped = false
		case r == '\\' && quote != '\'':
			escaped, inWord = true, true
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				w.WriteByte(r)
			}
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteByte(r)
			inWord = true
		}
	}
	if quote != 0 || escaped {
		return nil, errors.New("unterminated quote or trailing backslash")
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}
