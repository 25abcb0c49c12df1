package e2e

import (
	"archive/tar"
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/katatrace/katatrace/internal/katatest"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/roles"
)

// imageIndex reads the multi-architecture index of make image's layout
// ($KATATRACE_IMAGE).
func imageIndex(t *testing.T) v1.ImageIndex {
	t.Helper()
	dir := os.Getenv("KATATRACE_IMAGE")
	if _, err := os.Stat(filepath.Join(dir, "index.json")); dir == "" || err != nil {
		if os.Getenv("KATATRACE_E2E") == "1" {
			t.Fatalf("KATATRACE_IMAGE=%q must name make image's OCI layout", dir)
		}
		t.Skip("the image tests need make image's layout: run make e2e (KATATRACE_IMAGE)")
	}
	p, err := layout.FromPath(dir)
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
	if len(m.Manifests) != 1 {
		t.Fatalf("the layout holds %d entries, want the one index", len(m.Manifests))
	}
	idx, err := top.ImageIndex(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// imageFile is one entry of an image's layer.
type imageFile struct {
	hdr  *tar.Header
	body []byte
}

// imageFiles reads img's one layer.
func imageFiles(t *testing.T, img v1.Image) map[string]imageFile {
	t.Helper()
	ls, err := img.Layers()
	if err != nil || len(ls) != 1 {
		t.Fatalf("%d layers (%v), want 1", len(ls), err)
	}
	rc, err := ls[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]imageFile{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimSuffix(h.Name, "/")] = imageFile{h, b}
	}
}

// unitFroms are the --from addresses of the forwarder's systemd unit.
func unitFroms(t *testing.T) []string {
	b, err := os.ReadFile("../scripts/systemd/kata-trace-forwarder.service")
	if err != nil {
		t.Fatal(err)
	}
	var froms []string
	for _, m := range regexp.MustCompile(`--from (\S+)`).FindAllStringSubmatch(string(b), -1) {
		froms = append(froms, m[1])
	}
	return froms
}

// TestImageContents reads make image's index back: the four platforms Kata
// ships for; per image, its configuration (the forwarder serving what its
// unit serves, root and why, JSON logs, the OCI labels) and its layer (the
// platform's static binary, built as make builds it and with the fallback
// CA roots in it, every role's link, root and nonroot users), every entry
// dated the image's time and owned by root. The host's architecture's
// binary is make build's.
func TestImageContents(t *testing.T) {
	idx := imageIndex(t)
	bin, _ := binaries(t)
	version := strings.TrimSpace(strings.TrimPrefix(string(testutil.Must(exec.Command(bin, "version").Output())), "katatrace "))
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != "application/vnd.oci.image.index.v1+json" {
		t.Fatalf("index media type %s", m.MediaType)
	}
	want := map[string]struct {
		variant string
		machine elf.Machine
	}{"amd64": {"", elf.EM_X86_64}, "arm64": {"v8", elf.EM_AARCH64}, "s390x": {"", elf.EM_S390}, "ppc64le": {"", elf.EM_PPC64}}
	if len(m.Manifests) != len(want) {
		t.Fatalf("%d images, want %d", len(m.Manifests), len(want))
	}
	wantEntry := []string{"/usr/bin/kata-trace-forwarder"}
	for _, f := range unitFroms(t) {
		wantEntry = append(wantEntry, "--from", f)
	}
	for _, d := range m.Manifests {
		arch := d.Platform.Architecture
		t.Run(arch, func(t *testing.T) {
			w, ok := want[arch]
			if !ok || d.Platform.OS != "linux" || d.Platform.Variant != w.variant {
				t.Fatalf("platform %+v", d.Platform)
			}
			delete(want, arch)
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cf.Architecture != arch || cf.OS != "linux" {
				t.Fatalf("config's platform %s/%s", cf.OS, cf.Architecture)
			}
			c := cf.Config
			if !slices.Equal(c.Entrypoint, wantEntry) || len(c.Cmd) != 0 {
				t.Fatalf("entrypoint %q, cmd %q; want the unit's --froms, no cmd: %q", c.Entrypoint, c.Cmd, wantEntry)
			}
			if c.User != "0:0" || !slices.Contains(c.Env, "KATATRACE_LOG_FORMAT=json") || !slices.Contains(c.Env, "PATH=/usr/bin") {
				t.Fatalf("user %q, env %q", c.User, c.Env)
			}
			created := cf.Created.UTC()
			for k, v := range map[string]string{
				"org.opencontainers.image.version":  version,
				"org.opencontainers.image.licenses": "Apache-2.0",
				"org.opencontainers.image.source":   "https://github.com/katatrace/katatrace",
				"org.opencontainers.image.created":  created.Format(time.RFC3339),
			} {
				if c.Labels[k] != v {
					t.Errorf("label %s = %q, want %q", k, c.Labels[k], v)
				}
			}
			if !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(c.Labels["org.opencontainers.image.revision"]) ||
				!strings.Contains(c.Labels["org.opencontainers.image.description"], "0750") || created.IsZero() {
				t.Errorf("labels %q, created %s", c.Labels, created)
			}

			files := imageFiles(t, img)
			for name, f := range files {
				if !f.hdr.ModTime.Equal(created) || f.hdr.Uid != 0 || f.hdr.Gid != 0 {
					t.Errorf("%s: mtime %s (image %s), owner %d:%d", name, f.hdr.ModTime, created, f.hdr.Uid, f.hdr.Gid)
				}
			}
			exe, ok := files["usr/bin/katatrace"]
			if !ok || exe.hdr.Typeflag != tar.TypeReg || exe.hdr.Mode != 0o755 {
				t.Fatalf("usr/bin/katatrace: %+v", exe.hdr)
			}
			ef, err := elf.NewFile(bytes.NewReader(exe.body))
			if err != nil || ef.Machine != w.machine {
				t.Fatalf("the binary: %v, machine %v", err, ef)
			}
			for _, p := range ef.Progs {
				if p.Type == elf.PT_INTERP {
					t.Fatal("the binary is dynamically linked")
				}
			}
			info, err := buildinfo.Read(bytes.NewReader(exe.body))
			if err != nil {
				t.Fatal(err)
			}
			settings := map[string]string{}
			for _, s := range info.Settings {
				settings[s.Key] = s.Value
			}
			if settings["GOARCH"] != arch || settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" || !bytes.Contains(exe.body, []byte(version)) {
				t.Errorf("build settings %v, or no version %s in it", settings, version)
			}
			if !slices.ContainsFunc(info.Deps, func(m *debug.Module) bool { return m.Path == "golang.org/x/crypto/x509roots/fallback" }) {
				t.Error("no CA roots: golang.org/x/crypto/x509roots/fallback is not in the binary")
			}
			if arch == runtime.GOARCH {
				if mine, err := os.ReadFile(bin); err != nil || !bytes.Equal(mine, exe.body) {
					t.Errorf("the %s binary is not make build's %s (%v)", arch, bin, err)
				}
			}
			for _, r := range roles.All() {
				l, ok := files["usr/bin/"+r.Name]
				if !ok || l.hdr.Typeflag != tar.TypeSymlink || l.hdr.Linkname != "katatrace" {
					t.Errorf("role link %s: %+v", r.Name, l.hdr)
				}
			}
			if p := string(files["etc/passwd"].body); !strings.Contains(p, "root:x:0:0:") || !strings.Contains(p, "\nnonroot:x:65532:65532:") {
				t.Errorf("etc/passwd:\n%s", p)
			}
			if g := string(files["etc/group"].body); !strings.Contains(g, "root:x:0:") || !strings.Contains(g, "\nnonroot:x:65532:") {
				t.Errorf("etc/group:\n%s", g)
			}
		})
	}
}

// extractRoot writes img's layer out as a root filesystem in dir.
func extractRoot(t *testing.T, img v1.Image, dir string) {
	t.Helper()
	for name, f := range imageFiles(t, img) {
		p := filepath.Join(dir, name)
		if !strings.HasPrefix(p, dir+"/") {
			t.Fatalf("layer entry %q is outside the root", name)
		}
		var err error
		switch f.hdr.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, f.hdr.FileInfo().Mode().Perm())
		case tar.TypeReg:
			if err = os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
				err = os.WriteFile(p, f.body, f.hdr.FileInfo().Mode().Perm())
			}
		case tar.TypeSymlink:
			if err = os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
				err = os.Symlink(f.hdr.Linkname, p)
			}
		default:
			t.Fatalf("layer entry %s: type %c", name, f.hdr.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// hostImage is the index's image for this machine's architecture, the one
// it can run.
func hostImage(t *testing.T, idx v1.ImageIndex) v1.Image {
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range m.Manifests {
		if d.Platform != nil && d.Platform.Architecture == runtime.GOARCH {
			return testutil.Must(idx.Image(d.Digest))
		}
	}
	t.Skipf("the image has no linux/%s image to run here", runtime.GOARCH)
	return nil
}

// imageRoot is the root filesystem of the image for the host's
// architecture, extracted, with its config; it skips where a mount
// namespace and chroot cannot be had (not root, no unshare).
func imageRoot(t *testing.T, idx v1.ImageIndex) (string, *v1.ConfigFile) {
	if os.Geteuid() != 0 {
		t.Skip("a mount namespace and chroot need root")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) is not installed")
	}
	img := hostImage(t, idx)
	cf := testutil.Must(img.ConfigFile())
	root := t.TempDir()
	extractRoot(t, img, root)
	for _, d := range []string{"run/vc/vm", "run/katatrace"} { // the DaemonSet's mount points
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root, cf
}

// inContainer starts the image's entrypoint, with args after it, as a
// container runtime would, without one: in a mount namespace of its own,
// chrooted into root, with the image's environment alone, and the host
// directories binds (host path → path inside) mounted.
func inContainer(t *testing.T, root string, cf *v1.ConfigFile, binds [][2]string, args ...string) *testutil.Proc {
	mount, chroot := testutil.Must(exec.LookPath("mount")), testutil.Must(exec.LookPath("chroot"))
	script := "root=$1; shift; "
	for _, b := range binds {
		script += fmt.Sprintf("%s --bind %q \"$root%s\" && ", mount, b[0], b[1])
	}
	script += "exec " + chroot + ` "$root" "$@"`
	full := append([]string{"--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh", root}, cf.Config.Entrypoint...)
	cmd := exec.Command(testutil.Must(exec.LookPath("unshare")), append(full, args...)...)
	cmd.Env = cf.Config.Env // the image's alone, as a container has it
	return testutil.StartCmd(t, cmd)
}

// TestImageForwarderInMountNamespace runs the root filesystem of the
// image for the host's architecture as a container (inContainer), with
// its entrypoint (the forwarder on every path its unit serves) plus a
// DaemonSet's args (--to). A Kata VM directory of Cloud Hypervisor's is
// bind-mounted at /run/vc/vm: the forwarder inside makes clh.sock_10240
// beside each VM's socket, agents outside write the streams Kata's
// exporter wrote, and every span reaches Jaeger outside. The image's
// nonroot user runs its binary too.
func TestImageForwarderInMountNamespace(t *testing.T) {
	idx := imageIndex(t)
	j := startJaeger(t)
	root, cf := imageRoot(t, idx)
	out := testutil.Must(exec.Command(testutil.Must(exec.LookPath("chroot")), "--userspec=65532:65532", root, "/usr/bin/katatrace", "version").CombinedOutput())
	if !strings.HasPrefix(string(out), "katatrace ") {
		t.Fatalf("katatrace version as nonroot: %s", out)
	}

	vms := testutil.SockDir(t)
	p := inContainer(t, root, cf, [][2]string{{vms, "/run/vc/vm"}}, "--to", j.OTLPGRPCAddr())
	p.WaitLog(`"msg":"ready"`)

	sendToVMs(t, vms, "json-otel017-api", "bincode-otel014-api")
	stopForwarder(t, p, 2)
	checkKataTree(t, j.WaitTrace(t, "d5549796b885246c67389f3b2fa247d1", 6, 20*time.Second), "kata-agent", true)
	checkKataTree(t, j.WaitTrace(t, "a650f4bb0f1338066ba882140dded800", 6, 20*time.Second), "kata-agent", true)
	if log := p.Stderr.String(); !strings.Contains(log, `/run/vc/vm/sandbox-0/clh.sock_10240`) {
		t.Fatalf("the forwarder did not serve the VM at its path inside the image:\n%s", log)
	}
}

// TestImageRolloutBetweenContainers is the DaemonSet's rollout on one
// node, with the image: two containers (mount namespaces of their own,
// each with the VM directory and the node's /run/katatrace bind-mounted,
// as the chart mounts them) run the forwarder with --handover-socket;
// the second takes the first's listener and agents' connections, one
// of them in the middle of a frame, and the agents' traces reach Jaeger
// whole, though the first container is stopped between their halves.
func TestImageRolloutBetweenContainers(t *testing.T) {
	idx := imageIndex(t)
	j := startJaeger(t)
	root, cf := imageRoot(t, idx)
	vms, node := testutil.SockDir(t), testutil.SockDir(t)
	binds := [][2]string{{vms, "/run/vc/vm"}, {node, "/run/katatrace"}}
	args := []string{"--to", j.OTLPGRPCAddr(), "--handover-socket", "/run/katatrace/kata-trace-forwarder.sock"}
	old := inContainer(t, root, cf, binds, args...)
	old.WaitLog(`"msg":"ready"`)

	var agents []*katatest.Agent
	var frames [][][]byte
	for i, name := range []string{"json-otel017-api", "bincode-otel014-api"} {
		vm := filepath.Join(vms, fmt.Sprintf("sandbox-%d", i))
		testutil.VMMSocket(t, filepath.Join(vm, "clh.sock"))
		testutil.Eventually(t, 10*time.Second, "the VM's socket", func() bool {
			_, err := os.Stat(filepath.Join(vm, "clh.sock_10240"))
			return err == nil
		})
		a := katatest.DialAgent(t, filepath.Join(vm, "clh.sock_10240"))
		f := katatest.Frames(t, name)
		a.Send(f[:3]...)
		agents, frames = append(agents, a), append(frames, f)
	}
	a := agents[0]
	a.Write(binary.BigEndian.AppendUint64(nil, uint64(len(frames[0][3]))))
	a.Write(frames[0][3][:40])
	a.WaitRead()

	cur := inContainer(t, root, cf, binds, args...)
	cur.WaitLog(`"msg":"took over from the process at the handover socket"`)
	cur.WaitLog(`"msg":"ready"`)
	old.WaitLog(`"msg":"handed over: this process serves nothing now`)
	old.Signal(syscall.SIGTERM)
	if code := old.Wait(10 * time.Second); code != 0 {
		t.Fatalf("the old container exited %d:\n%s", code, old.Stderr.String())
	}
	a.Write(frames[0][3][40:])
	a.Send(frames[0][4:]...)
	agents[1].Send(frames[1][3:]...)
	checkKataTree(t, j.WaitTrace(t, "d5549796b885246c67389f3b2fa247d1", 6, 20*time.Second), "kata-agent", true)
	checkKataTree(t, j.WaitTrace(t, "a650f4bb0f1338066ba882140dded800", 6, 20*time.Second), "kata-agent", true)
	for _, a := range agents {
		a.Check()
	}
	cur.Signal(syscall.SIGTERM)
	if code := cur.Wait(10 * time.Second); code != 0 {
		t.Fatalf("the new container exited %d:\n%s", code, cur.Stderr.String())
	}
}

// TestImageUnderPodman: the same through podman, where it is installed.
func TestImageUnderPodman(t *testing.T) {
	imageIndex(t)
	podman, err := exec.LookPath("podman")
	if err != nil {
		t.Skip("podman is not installed: the image is run in a mount namespace instead (TestImageForwarderInMountNamespace)")
	}
	j := startJaeger(t)
	vms := testutil.SockDir(t)
	// Host network: Jaeger listens on the host's loopback. seccomp
	// unconfined: the default profile refuses socket(AF_VSOCK), which the
	// entrypoint's vsock://any:10240 opens.
	// make image's oci-archive, as the guide pulls it: the host's
	// platform's image.
	archive := filepath.Join(filepath.Dir(os.Getenv("KATATRACE_IMAGE")), "katatrace-image.tar")
	out, err := exec.Command(podman, "pull", "--quiet", "oci-archive:"+archive).Output()
	if err != nil {
		t.Fatalf("podman pull oci-archive:%s: %v", archive, err)
	}
	id := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command(podman, "rmi", "--force", id).Run() })
	// A machine whose container runtime cannot start a container at all
	// (crun refused setrlimit on this one's) skips; the image's own
	// failures (exit 126, 127, or its binary's) do not.
	probe, err := exec.Command(podman, "run", "--rm", "--network", "host", "--entrypoint", "/usr/bin/katatrace", id, "version").CombinedOutput()
	if err != nil && runtimeCannotRun(probe) {
		t.Skipf("podman cannot run a container on this machine: %s", bytes.TrimSpace(probe))
	}
	if err != nil || !bytes.HasPrefix(probe, []byte("katatrace ")) {
		// 126: the entrypoint could not be executed; 127: not found.
		t.Fatalf("katatrace version under podman: %v\n%s", err, probe)
	}
	name := fmt.Sprintf("katatrace-e2e-%d", os.Getpid())
	p := testutil.Start(t, nil, podman, "run", "--rm", "--name", name, "--network", "host", "--security-opt", "seccomp=unconfined",
		"-v", vms+":/run/vc/vm", id, "--to", j.OTLPGRPCAddr())
	t.Cleanup(func() { _ = exec.Command(podman, "rm", "--force", name).Run() })
	p.WaitLog(`"msg":"ready"`)
	sendToVMs(t, vms, "json-otel017-api")
	stopForwarder(t, p, 1)
	checkKataTree(t, j.WaitTrace(t, "d5549796b885246c67389f3b2fa247d1", 6, 20*time.Second), "kata-agent", true)
}

// runtimeCannotRun reports whether podman run's output says the container
// runtime itself could not start a container: its limits, its cgroups, its
// user namespace. Not by exit code: podman gives a runtime's "Operation not
// permitted" 126, as it does an entrypoint that cannot be executed; 126 and
// 127 (an entrypoint not found) without those words are the image's.
func runtimeCannotRun(out []byte) bool {
	return runtimeFailure.Match(out)
}

var runtimeFailure = regexp.MustCompile(`setrlimit|cgroup|newuidmap|newgidmap`)

// TestRuntimeCannotRun: podman's own words for a container runtime that
// cannot start any container here skip the podman test; the image's
// failures fail it.
func TestRuntimeCannotRun(t *testing.T) {
	for _, tt := range []struct {
		name, out string
		skip      bool
	}{
		{"setrlimit", "Error: OCI runtime error: crun: setrlimit `RLIMIT_NPROC`: Operation not permitted: OCI permission denied", true},
		{"cgroup", "Error: OCI runtime error: crun: create `/sys/fs/cgroup/user.slice/libpod-1f2e`: Read-only file system", true},
		{"user namespace", "Error: cannot set up namespace using \"/usr/bin/newuidmap\": exit status 1", true},
		{"not executable (126)", "Error: crun: open executable: Permission denied: OCI permission denied", false},
		{"no entrypoint (127)", "Error: crun: executable file `/usr/bin/katatrace` not found in $PATH: No such file or directory: OCI runtime attempted to invoke a command that was not found", false},
		{"the binary's own exit", "katatrace: unknown command", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := runtimeCannotRun([]byte(tt.out)); got != tt.skip {
				t.Errorf("runtimeCannotRun(%q) = %v", tt.out, got)
			}
		})
	}
}

// TestImageRebuildsToTheSameDigest: make image's tool, run again now on
// the binaries the image holds and the version, revision and time its
// labels give, writes the same index, byte for byte: nothing of the
// build's moment, host or file system got in.
func TestImageRebuildsToTheSameDigest(t *testing.T) {
	idx := imageIndex(t)
	m := testutil.Must(idx.IndexManifest())
	dir := t.TempDir()
	var labels map[string]string
	args := []string{"run", "../cmd/katatrace-image", "--out", filepath.Join(dir, "image")}
	for _, d := range m.Manifests {
		img := testutil.Must(idx.Image(d.Digest))
		labels = testutil.Must(img.ConfigFile()).Config.Labels
		exe := filepath.Join(dir, d.Platform.Architecture)
		if err := os.WriteFile(exe, imageFiles(t, img)["usr/bin/katatrace"].body, 0o700); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--binary", "linux/"+d.Platform.Architecture+"="+exe)
	}
	created := testutil.Must(time.Parse(time.RFC3339, labels["org.opencontainers.image.created"]))
	args = append(args, "--version", labels["org.opencontainers.image.version"], "--revision", labels["org.opencontainers.image.revision"],
		"--source", labels["org.opencontainers.image.source"], "--created", fmt.Sprint(created.Unix()))
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	want := testutil.Must(idx.Digest())
	if !strings.Contains(string(out), "image index "+want.String()) {
		t.Fatalf("rebuilt: %s\nwant index %s", out, want)
	}
}
