package lowmem

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// endStartupTrimming ends the trimming of the test process's first second,
// which would race a test's own, without dropping the binary from the page
// cache (as Settle does): what a test touches then comes back with its
// neighbours, a change large enough to see.
func endStartupTrimming() {
	settled.Store(true)
	time.Sleep(2 * startTrimEvery * time.Nanosecond)
}

func rssFileKiB(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "RssFile:"); ok {
			n, _ := strconv.Atoi(strings.Fields(rest)[0])
			return n
		}
	}
	t.Skip("no RssFile in /proc/self/status")
	return 0
}

// TestTrimExecutable: the executable's pages leave the RSS, and the code
// keeps running (they come back from the page cache when touched).
func TestTrimExecutable(t *testing.T) {
	endStartupTrimming()
	// Touch a good part of the binary first.
	_ = strings.Repeat(strconv.Itoa(12345), 100)
	before := rssFileKiB(t)
	TrimExecutable()
	after := rssFileKiB(t)
	t.Logf("RssFile %d KiB → %d KiB", before, after)
	if after >= before {
		t.Fatalf("RssFile did not shrink: %d → %d KiB", before, after)
	}
	if s := strconv.Itoa(42); s != "42" { // code still runs
		t.Fatal(s)
	}
}

// touch runs code the test has not run yet, faulting pages of the binary
// in.
func touch(t *testing.T) {
	var b strings.Builder
	for i := range 2000 {
		b.WriteString(strconv.FormatFloat(float64(i)/7, 'g', -1, 64))
		b.WriteString(strconv.Quote(string(rune(i))))
	}
	if b.Len() == 0 {
		t.Fatal("nothing built")
	}
}

// TestTrimEvery: pages touched after start-up leave the RSS within a
// period, where without it they stay.
func TestTrimEvery(t *testing.T) {
	if trimming.Load() {
		t.Skip("TrimEvery already runs in this process (-count > 1): nothing to compare with")
	}
	endStartupTrimming()
	touch(t)
	held := rssFileKiB(t)
	time.Sleep(300 * time.Millisecond)
	if still := rssFileKiB(t); still < held-64 {
		t.Fatalf("RssFile fell %d → %d KiB with nothing trimming: the test cannot tell", held, still)
	}
	TrimEvery(int64(50 * time.Millisecond))
	deadline := time.Now().Add(5 * time.Second)
	for {
		now := rssFileKiB(t)
		if now < held-64 {
			t.Logf("RssFile %d → %d KiB", held, now)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("RssFile still %d KiB (was %d) after TrimEvery", now, held)
		}
		time.Sleep(20 * time.Millisecond)
	}
	touch(t) // the code still runs
}
