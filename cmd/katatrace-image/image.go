package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/katatrace/katatrace/roles"
)

// platforms are the architectures Kata ships for, with the ELF machine
// and byte order their binaries must have.
var platforms = []platformInfo{
	{"amd64", "", elf.EM_X86_64, "LittleEndian"},
	{"arm64", "v8", elf.EM_AARCH64, "LittleEndian"},
	{"ppc64le", "", elf.EM_PPC64, "LittleEndian"},
	{"s390x", "", elf.EM_S390, "BigEndian"},
}

type platformInfo struct {
	arch, variant string
	machine       elf.Machine
	order         string
}

// rank is arch's place in platforms, -1 if it has none.
func rank(arch string) int {
	return slices.IndexFunc(platforms, func(p platformInfo) bool { return p.arch == arch })
}

func parsePlatform(s string) (v1.Platform, error) {
	os, arch, _ := strings.Cut(s, "/")
	for _, p := range platforms {
		if os == "linux" && arch == p.arch {
			return v1.Platform{OS: "linux", Architecture: p.arch, Variant: p.variant}, nil
		}
	}
	return v1.Platform{}, fmt.Errorf("platform %q: give linux/amd64, linux/arm64, linux/s390x or linux/ppc64le", s)
}

type binaryFile struct {
	platform v1.Platform
	path     string
}

// spec is what the image is made of; nothing else goes in.
type spec struct {
	binaries                  []binaryFile
	version, revision, source string
	created                   time.Time
}

// The image's paths. The role links sit beside the binary, as make
// install puts them.
const (
	binDir  = "/usr/bin"
	exePath = binDir + "/katatrace"
)

// hybridVsockFroms are the forwarder's --from for every hypervisor of both
// Kata runtimes, as its systemd unit gives them
// (scripts/systemd/kata-trace-forwarder.service).
var hybridVsockFroms = []string{
	"vsock://any:10240",
	"unix:///run/vc/firecracker/*/root/kata.hvsock_10240",
	"unix:///run/vc/vm/*/clh.sock_10240",
	"unix:///run/kata/*/root/kata.hvsock_10240",
	"unix:///run/kata/*/ch-vm.sock_10240",
	"unix:///run/kata/firecracker/*/root/kata.hvsock_10240",
	"unix:///run/kata/*/kata.hvsock_10240",
	"unix:///run/kata/*/vsock.sock_10240",
}

// entrypoint runs kata-trace-forwarder on every path its unit serves. The
// --from flags are in the entrypoint, not in Cmd, so that a DaemonSet's
// args (--to, --metrics-listen...) add to them instead of replacing them;
// another role, or other paths, is a command: (Kubernetes) or
// --entrypoint (podman). Not $KATATRACE_FROM: every role reads it.
func entrypoint() []string {
	e := []string{binDir + "/kata-trace-forwarder"}
	for _, f := range hybridVsockFroms {
		e = append(e, "--from", f)
	}
	return e
}

// userNote says why the image runs as root, in the labels that tools show.
const userNote = "Runs as root (uid 0, no capability needed): a hybrid-vsock listener goes into Kata's VM directory, root's with mode 0750. " +
	"Where agents reach the host over vsock only (QEMU), run as user 65532 (nonroot)."

var tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// tag is the layout's reference name: the version, as a registry takes a tag.
func (s spec) tag() string { return s.version }

func (s spec) labels() map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       "katatrace",
		"org.opencontainers.image.description": "Kata Containers agent traces from VM guests to Jaeger and OpenTelemetry. " + userNote,
		"org.opencontainers.image.version":     s.version,
		"org.opencontainers.image.revision":    s.revision,
		"org.opencontainers.image.source":      s.source,
		"org.opencontainers.image.licenses":    "Apache-2.0",
		"org.opencontainers.image.created":     s.created.Format(time.RFC3339),
	}
}

func (s spec) validate() error {
	if !tagRE.MatchString(s.version) {
		return fmt.Errorf("--version %q: give a version an image tag can carry (letters, digits, '_', '.', '-'; 128 at most)", s.version)
	}
	if s.revision == "" {
		return errors.New("--revision: give the source's commit")
	}
	if len(s.binaries) == 0 {
		return errors.New("--binary: give at least one PLATFORM=PATH")
	}
	seen := map[string]bool{}
	for _, b := range s.binaries {
		if seen[b.platform.Architecture] {
			return fmt.Errorf("--binary: %s given twice", b.platform.Architecture)
		}
		seen[b.platform.Architecture] = true
	}
	return nil
}

// build makes the index: one image per binary, in the order of platforms.
func build(s spec) (v1.ImageIndex, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	bins := slices.Clone(s.binaries)
	slices.SortFunc(bins, func(a, b binaryFile) int { return rank(a.platform.Architecture) - rank(b.platform.Architecture) })
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, b := range bins {
		img, err := s.image(b)
		if err != nil {
			return nil, err
		}
		p := b.platform
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	return mutate.Annotations(idx, s.labels()).(v1.ImageIndex), nil
}

// image is one platform's: a single layer and its configuration.
func (s spec) image(b binaryFile) (v1.Image, error) {
	exe, err := readBinary(b)
	if err != nil {
		return nil, err
	}
	rootfs, err := s.rootfs(exe)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(rootfs)), nil },
		tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("%s: layer: %w", b.path, err)
	}
	cf := &v1.ConfigFile{
		Architecture: b.platform.Architecture,
		OS:           b.platform.OS,
		Variant:      b.platform.Variant,
		Created:      v1.Time{Time: s.created},
		Config: v1.Config{
			Entrypoint: entrypoint(),
			// JSON logs, as the systemd units write them: a node's log
			// collector parses them.
			Env:        []string{"PATH=" + binDir, "KATATRACE_LOG_FORMAT=json"},
			User:       "0:0", // see userNote
			WorkingDir: "/",
			Labels:     s.labels(),
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
	img, err := mutate.ConfigFile(empty.Image, cf)
	if err != nil {
		return nil, err
	}
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: types.OCILayer, History: v1.History{
		Created:   v1.Time{Time: s.created},
		CreatedBy: "katatrace-image: katatrace " + s.version + ", its role links, /etc/passwd and /etc/group",
	}})
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	return mutate.Annotations(img, s.labels()).(v1.Image), nil
}

// readBinary reads a binary and checks it is a static ELF executable of
// its platform: a wrong GOARCH or a cgo build would pass unnoticed until a
// node ran it.
func readBinary(b binaryFile) ([]byte, error) {
	data, err := os.ReadFile(b.path)
	if err != nil {
		return nil, fmt.Errorf("--binary %s: %w", b.path, err)
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("--binary %s: not an ELF binary: %w", b.path, err)
	}
	defer f.Close()
	want := platforms[rank(b.platform.Architecture)]
	if f.Machine != want.machine || f.Class != elf.ELFCLASS64 || f.ByteOrder.String() != want.order {
		return nil, fmt.Errorf("--binary %s: built for %s (%s, %s), not linux/%s: build it with GOARCH=%s", b.path, f.Machine, f.Class, f.ByteOrder, want.arch, want.arch)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return nil, fmt.Errorf("--binary %s: an ELF %s, not an executable", b.path, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("--binary %s: dynamically linked (it names an interpreter): build it with CGO_ENABLED=0, the image has no libc", b.path)
		}
	}
	return data, nil
}

// passwd and group: root, and nonroot (distroless's 65532) for the roles
// that can run without root: a QEMU-only node's, whose agents connect over
// vsock and not into Kata's directories. No home, no shell: nothing in the
// image logs in.
const (
	passwd = "root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n"
	group  = "root:x:0:\nnonroot:x:65532:\n"
)

// rootfs is the layer's tar: directories, the binary, its role links, the
// users. Entries are sorted, owned by 0:0 and dated s.created, so that the
// bytes depend on the binary alone. CA roots are the binary's own
// (golang.org/x/crypto/x509roots/fallback's, used where the system has
// none, as here): no bundle file to go stale beside it.
func (s spec) rootfs(exe []byte) ([]byte, error) {
	type entry struct {
		hdr  tar.Header
		body []byte
	}
	entries := []entry{
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "etc/group", Mode: 0o644}, body: []byte(group)},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644}, body: []byte(passwd)},
		// /tmp for os.TempDir; sticky, as everywhere.
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777}},
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "usr/", Mode: 0o755}},
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "usr/bin/", Mode: 0o755}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(exePath, "/"), Mode: 0o755}, body: exe},
	}
	for _, r := range roles.All() {
		entries = append(entries, entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: strings.TrimPrefix(binDir, "/") + "/" + r.Name, Linkname: filepath.Base(exePath), Mode: 0o777}})
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.hdr.Name, b.hdr.Name) })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		h.ModTime, h.Size, h.Format = s.created, int64(len(e.body)), tar.FormatPAX
		h.Uname, h.Gname = "root", "root"
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("layer: %s: %w", h.Name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, fmt.Errorf("layer: %s: %w", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeLayout replaces dir with an OCI layout holding idx, tagged tag. A
// directory that is not an OCI layout is not replaced: --out named
// something else.
func writeLayout(dir string, idx v1.ImageIndex, tag string) error {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
			return fmt.Errorf("--out %s: not empty and no OCI layout: not replacing it", dir)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("--out %s: %w", dir, err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})); err != nil {
		return fmt.Errorf("--out %s: %w", dir, err)
	}
	return nil
}

// writeArchive tars the layout at dir (an oci-archive), its entries
// sorted, owned by 0:0 and dated mtime.
func writeArchive(path, dir string, mtime time.Time) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("--archive: %w", err)
	}
	defer os.Remove(tmp)
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error { // lexical order
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: mtime, Mode: 0o644, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if d.IsDir() {
			h.Name, h.Mode, h.Typeflag = h.Name+"/", 0o755, tar.TypeDir
			return tw.WriteHeader(h)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		h.Size = int64(len(b))
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("--archive %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

// report prints the index's digest and, per platform, the manifest's
// digest, the compressed layer and the binary's size.
func report(w io.Writer, idx v1.ImageIndex, s spec) error {
	d, err := idx.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "katatrace %s image index %s\n", s.version, d)
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, m := range im.Manifests {
		img, err := idx.Image(m.Digest)
		if err != nil {
			return err
		}
		ls, err := img.Layers()
		if err != nil {
			return err
		}
		size, err := ls[0].Size()
		if err != nil {
			return err
		}
		st, err := os.Stat(s.binaries[slices.IndexFunc(s.binaries, func(b binaryFile) bool { return b.platform.Architecture == m.Platform.Architecture })].path)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "  %-14s %s  layer %d bytes (gzip), binary %d bytes\n", m.Platform.OS+"/"+m.Platform.Architecture, m.Digest, size, st.Size())
	}
	return nil
}
