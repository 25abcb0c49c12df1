package systemd

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// TrimResidentCode lets a small guest process hold only the pages of its own
// executable that it really uses. A static Go binary holds code for every
// role; the kernel's fault-around maps the neighbours of each page touched,
// so most of the file ends up counted in the relay's RSS. Marking the
// read-only mappings MADV_RANDOM stops fault-around, and MADV_DONTNEED
// unmaps what start-up touched; the pages stay in the page cache and come
// back on use. Writable mappings are never touched. It returns the bytes
// unmapped.
func TrimResidentCode() (int, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	total := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode path
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[5] != exe || strings.Contains(fields[1], "w") {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if !ok || err1 != nil || err2 != nil || end <= start {
			continue
		}
		for _, advice := range []int{unix.MADV_RANDOM, unix.MADV_DONTNEED} {
			if _, _, e := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), uintptr(advice)); e != 0 {
				return total, fmt.Errorf("madvise %s: %w", fields[0], e)
			}
		}
		total += int(end - start)
	}
	return total, sc.Err()
}
