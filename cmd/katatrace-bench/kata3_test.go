package main

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/katatrace/katatrace/kataspan"
)

// TestBincodeFrames: the bench's bincode frames are spans the
// forwarder reads, ids varying, the root last.
func TestBincodeFrames(t *testing.T) {
	s := kata3Bincode(3)
	var ids []uint64
	for len(s) > 0 {
		n := binary.BigEndian.Uint64(s)
		sp, err := kataspan.DecodeBincode(s[8 : 8+n])
		if err != nil {
			t.Fatal(err)
		}
		if sp.Name != "child-span" || len(sp.Attributes) != 4 || len(sp.Events) != 1 || !sp.HasResource {
			t.Fatalf("span %+v", sp)
		}
		ids = append(ids, sp.SpanID, sp.ParentSpanID)
		s = s[8+n:]
	}
	if want := []uint64{2, 1, 3, 1, 1, 0}; fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("span and parent ids %v, want %v", ids, want)
	}
}
