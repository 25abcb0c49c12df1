package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// fakeELF is an ELF64 executable's header for machine, with a PT_INTERP
// program header (a dynamic binary's) when interp; enough for debug/elf.
func fakeELF(machine elf.Machine, order binary.ByteOrder, interp bool) []byte {
	b := make([]byte, 64, 128)
	copy(b, elf.ELFMAG)
	b[elf.EI_CLASS], b[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.EV_CURRENT)
	b[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	if order == binary.BigEndian {
		b[elf.EI_DATA] = byte(elf.ELFDATA2MSB)
	}
	order.PutUint16(b[16:], uint16(elf.ET_EXEC))
	order.PutUint16(b[18:], uint16(machine))
	order.PutUint32(b[20:], uint32(elf.EV_CURRENT))
	order.PutUint16(b[52:], 64) // ehsize
	order.PutUint16(b[54:], 56) // phentsize
	if interp {
		order.PutUint64(b[32:], 64) // phoff
		order.PutUint16(b[56:], 1)  // phnum
		ph := make([]byte, 56)
		order.PutUint32(ph, uint32(elf.PT_INTERP))
		b = append(b, ph...)
	}
	return append(b, "a katatrace stand-in"...)
}

// fakeBinaries writes a stand-in binary per platform into dir, dated mtime.
func fakeBinaries(t *testing.T, dir string, mtime time.Time) []binaryFile {
	var bins []binaryFile
	for _, p := range platforms {
		order := binary.ByteOrder(binary.LittleEndian)
		if p.order == "BigEndian" {
			order = binary.BigEndian
		}
		path := filepath.Join(dir, p.arch)
		if err := os.WriteFile(path, fakeELF(p.machine, order, false), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		pl, err := parsePlatform("linux/" + p.arch)
		if err != nil {
			t.Fatal(err)
		}
		bins = append(bins, binaryFile{platform: pl, path: path})
	}
	return bins
}

func testSpec(bins []binaryFile) spec {
	return spec{binaries: bins, version: "v1.2.3", revision: "abc123", source: "https://example.invalid/katatrace", created: time.Unix(1700000000, 0).UTC()}
}

func digest(t *testing.T, s spec) v1.Hash {
	t.Helper()
	idx, err := build(s)
	if err != nil {
		t.Fatal(err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestReproducible: the digest depends on the binaries' bytes and the
// spec, not on when or in which order the binaries were given or written,
// nor their modes; a changed byte or version changes it.
func TestReproducible(t *testing.T) {
	a := fakeBinaries(t, t.TempDir(), time.Now())
	b := fakeBinaries(t, t.TempDir(), time.Unix(1, 0))
	for i := range b {
		if err := os.Chmod(b[i].path, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b[0], b[3] = b[3], b[0]
	da := digest(t, testSpec(a))
	time.Sleep(1100 * time.Millisecond) // a second later: no clock may leak in
	if db := digest(t, testSpec(b)); db != da {
		t.Fatalf("same binaries, different digests: %s and %s", da, db)
	}
	other := testSpec(a)
	other.version = "v1.2.4"
	if d := digest(t, other); d == da {
		t.Fatal("another version, the same digest")
	}
	if err := os.WriteFile(a[1].path, append(fakeELF(elf.EM_AARCH64, binary.LittleEndian, false), '!'), 0o755); err != nil {
		t.Fatal(err)
	}
	if d := digest(t, testSpec(a)); d == da {
		t.Fatal("another arm64 binary, the same digest")
	}
}

// TestBadInput: every input that would make a broken image is refused,
// naming what was wrong.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	bins := fakeBinaries(t, dir, time.Now())
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	amd64 := bins[0].platform
	for _, tt := range []struct {
		name string
		mod  func(s *spec)
		want string
	}{
		{"an arm64 binary as amd64's", func(s *spec) { s.binaries[0].path = s.binaries[1].path }, "not linux/amd64: build it with GOARCH=amd64"},
		{"a dynamic binary", func(s *spec) {
			s.binaries[0].path = write("dyn", fakeELF(elf.EM_X86_64, binary.LittleEndian, true))
		}, "dynamically linked"},
		{"no ELF", func(s *spec) { s.binaries[0].path = write("script", []byte("#!/bin/sh\n")) }, "not an ELF binary"},
		{"missing", func(s *spec) { s.binaries[0].path = filepath.Join(dir, "absent") }, "absent: open"},
		{"twice", func(s *spec) { s.binaries = append(s.binaries, binaryFile{platform: amd64, path: s.binaries[0].path}) }, "amd64 given twice"},
		{"none", func(s *spec) { s.binaries = nil }, "--binary: give at least one"},
		{"a version no tag takes", func(s *spec) { s.version = "1.0+dirty" }, `--version "1.0+dirty"`},
		{"no revision", func(s *spec) { s.revision = "" }, "--revision"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := testSpec(append([]binaryFile(nil), bins...))
			tt.mod(&s)
			_, err := build(s)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one saying %q", err, tt.want)
			}
		})
	}
	for _, tt := range []struct{ args, want string }{
		{"--out x --created 1 --binary linux/riscv64=x --version v --revision r", `platform "linux/riscv64"`},
		{"--out x --created 1 --binary linux/amd64 --version v --revision r", "give PLATFORM=PATH"},
		{"--out x --created yesterday --version v --revision r", `--created "yesterday"`},
		{"--created 1 --version v --revision r", "--out: give"},
	} {
		t.Run(tt.args, func(t *testing.T) {
			t.Setenv("SOURCE_DATE_EPOCH", "")
			if err := run(strings.Fields(tt.args)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one saying %q", err, tt.want)
			}
		})
	}
}

// TestLayoutAndArchive: the layout reads back as the index built, tagged
// with the version; the archive holds the layout's files, sorted, dated
// --created, owned by root; a directory that is no layout is not replaced.
func TestLayoutAndArchive(t *testing.T) {
	dir := t.TempDir()
	s := testSpec(fakeBinaries(t, t.TempDir(), time.Now()))
	idx, err := build(s)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "image")
	if err := writeLayout(out, idx, s.tag()); err != nil {
		t.Fatal(err)
	}
	if err := writeLayout(out, idx, s.tag()); err != nil { // replaced
		t.Fatal(err)
	}
	p, err := layout.FromPath(out)
	if err != nil {
		t.Fatal(err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	m, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := idx.Digest()
	if len(m.Manifests) != 1 || m.Manifests[0].Digest != want || m.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "v1.2.3" {
		t.Fatalf("layout's index.json: %+v, want %s tagged v1.2.3", m.Manifests, want)
	}

	arc := filepath.Join(dir, "image.tar")
	if err := writeArchive(arc, out, s.created); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(arc)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(s.created) || h.Uid != 0 || h.Gid != 0 {
			t.Fatalf("%s: mtime %s, owner %d:%d", h.Name, h.ModTime, h.Uid, h.Gid)
		}
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			disk, err := os.ReadFile(filepath.Join(out, h.Name))
			if err != nil || !bytes.Equal(b, disk) {
				t.Fatalf("%s: not the layout's file (%v)", h.Name, err)
			}
		}
		names = append(names, h.Name)
	}
	if len(names) < 8 || names[0] != "blobs/" || !strings.Contains(strings.Join(names, " "), "index.json oci-layout") {
		t.Fatalf("archive entries: %v", names)
	}

	other := filepath.Join(dir, "notes")
	if err := os.MkdirAll(other, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other, "keep.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeLayout(other, idx, s.tag()); err == nil || !strings.Contains(err.Error(), "not replacing it") {
		t.Fatalf("a directory that is no layout: %v", err)
	}
	if _, err := os.Stat(filepath.Join(other, "keep.txt")); err != nil {
		t.Fatal(err)
	}
}
