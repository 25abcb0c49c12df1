package roles

import (
	"fmt"
	"strconv"
	"strings"
)

// ByteSize is a flag value in bytes: 4194304, 4MiB, 4M, 512KiB, 1G.
type ByteSize int64

var units = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
}

// UnmarshalText parses a size.
func (b *ByteSize) UnmarshalText(t []byte) error {
	s := strings.TrimSpace(string(t))
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return fmt.Errorf("invalid size %q: want a whole number of bytes up to 1TiB, optionally with KiB, MiB or GiB (e.g. 4MiB)", string(t))
	}
	*b = ByteSize(n * mult)
	return nil
}

func (b ByteSize) String() string {
	switch {
	case b != 0 && b%(1<<20) == 0:
		return strconv.FormatInt(int64(b)>>20, 10) + "MiB"
	case b != 0 && b%(1<<10) == 0:
		return strconv.FormatInt(int64(b)>>10, 10) + "KiB"
	}
	return strconv.FormatInt(int64(b), 10)
}

// ByteRate is a flag value in bytes per second: 1MiB, 1MiB/s, 1048576.
type ByteRate ByteSize

// UnmarshalText parses a rate; the "/s" is optional.
func (r *ByteRate) UnmarshalText(t []byte) error {
	return (*ByteSize)(r).UnmarshalText([]byte(strings.TrimSuffix(strings.TrimSpace(string(t)), "/s")))
}

func (r ByteRate) String() string { return ByteSize(r).String() + "/s" }
