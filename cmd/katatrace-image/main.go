// Command katatrace-image writes katatrace's OCI image: a multi-architecture
// index (one image per static binary given) as an OCI layout directory and
// an oci-archive tarball, without a container daemon. `make image` runs it;
// docs/guide.md ("Image") says what is inside and why. Same binaries, same
// flags: same bytes, same digest (no time but --created, no owner, no
// order but sorted).
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "katatrace-image:", err)
		os.Exit(1)
	}
}

// binaryFlags is --binary PLATFORM=PATH, repeatable.
type binaryFlags []binaryFile

func (b *binaryFlags) String() string { return fmt.Sprint(*b) }

func (b *binaryFlags) Set(s string) error {
	plat, path, ok := strings.Cut(s, "=")
	if !ok || path == "" {
		return fmt.Errorf("%q: give PLATFORM=PATH, e.g. linux/arm64=bin/linux-arm64/katatrace", s)
	}
	p, err := parsePlatform(plat)
	if err != nil {
		return err
	}
	*b = append(*b, binaryFile{platform: p, path: path})
	return nil
}

func run(args []string) error {
	fs := flag.NewFlagSet("katatrace-image", flag.ContinueOnError)
	var bins binaryFlags
	fs.Var(&bins, "binary", "PLATFORM=PATH: a static katatrace binary for linux/amd64, linux/arm64, linux/s390x or linux/ppc64le (repeatable)")
	out := fs.String("out", "", "the OCI layout directory to write (replaced)")
	archive := fs.String("archive", "", "also an oci-archive tarball of that layout here (podman load, skopeo copy oci-archive:)")
	version := fs.String("version", "", "org.opencontainers.image.version, and the layout's tag")
	revision := fs.String("revision", "", "org.opencontainers.image.revision: the source's commit")
	source := fs.String("source", "https://github.com/katatrace/katatrace", "org.opencontainers.image.source")
	created := fs.String("created", os.Getenv("SOURCE_DATE_EPOCH"), "the image's time, in seconds since 1970 ($SOURCE_DATE_EPOCH): every file's mtime and org.opencontainers.image.created")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *out == "" {
		return errors.New("--out: give the layout directory to write")
	}
	if *created == "" {
		return errors.New("--created (or $SOURCE_DATE_EPOCH): give the image's time; it is never taken from the clock, so that a rebuild has the same digest")
	}
	secs, err := strconv.ParseInt(*created, 10, 64)
	if err != nil || secs < 0 {
		return fmt.Errorf("--created %q: give seconds since 1970, e.g. git log -1 --format=%%ct", *created)
	}
	spec := spec{
		binaries: bins,
		version:  *version,
		revision: *revision,
		source:   *source,
		created:  time.Unix(secs, 0).UTC(),
	}
	idx, err := build(spec)
	if err != nil {
		return err
	}
	if err := writeLayout(*out, idx, spec.tag()); err != nil {
		return err
	}
	if *archive != "" {
		if err := writeArchive(*archive, *out, spec.created); err != nil {
			return err
		}
	}
	return report(os.Stdout, idx, spec)
}
