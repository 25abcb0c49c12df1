package handover

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// message is every message of the handover, in JSON: a successor's
// request (Handover, Role, PID), a refusal (Error), a batch of names whose
// descriptors ride with it (Names), the end (Done, the count), the
// successor's answer (Taken, the count).
type message struct {
	Handover int      `json:"handover,omitempty"`
	Role     string   `json:"role,omitempty"`
	PID      int      `json:"pid,omitempty"`
	Error    string   `json:"error,omitempty"`
	Names    []string `json:"names,omitempty"`
	Done     *int     `json:"done,omitempty"`
	Taken    *int     `json:"taken,omitempty"`
}

// decode reads one message: JSON of message's fields only, one kind of
// message, counts and pids not negative.
func decode(b []byte) (message, error) {
	var m message
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&m); err != nil {
		return message{}, fmt.Errorf("not a handover message: %w", err)
	}
	if d.More() {
		return message{}, fmt.Errorf("not a handover message: more after its JSON object")
	}
	kinds := 0
	for _, is := range []bool{m.Handover != 0 || m.Role != "", m.Error != "", m.Names != nil, m.Done != nil, m.Taken != nil} {
		if is {
			kinds++
		}
	}
	switch {
	case kinds != 1:
		return message{}, fmt.Errorf("not a handover message: %d kinds of message in one", kinds)
	case m.PID < 0 || m.Done != nil && *m.Done < 0 || m.Taken != nil && *m.Taken < 0:
		return message{}, fmt.Errorf("not a handover message: a negative count or pid")
	case m.Names != nil && len(m.Names) == 0:
		return message{}, fmt.Errorf("not a handover message: an empty batch")
	}
	return m, nil
}
