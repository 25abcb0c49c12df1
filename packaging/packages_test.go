// Package packaging holds nfpm's configurations and maintainer scripts
// (make packages); its tests read the packages back.
package packaging

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dist is make packages' output, as make packages gives it to this test
// (KATATRACE_DIST): building them here would take nfpm and a build of
// the binary.
func dist(t *testing.T) string {
	t.Helper()
	d := os.Getenv("KATATRACE_DIST")
	if d == "" {
		t.Skip("KATATRACE_DIST unset: make packages builds the packages and runs this test on them")
	}
	return d
}

// pkg is one package file of each name and format in dir.
func pkg(t *testing.T, dir, name, format string) string {
	t.Helper()
	pattern := map[string]string{"deb": name + "_*.deb", "rpm": name + "-[0-9]*.rpm"}[format]
	m, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil || len(m) != 1 {
		t.Fatalf("%s: %d files match %s, want 1 (%v)", dir, len(m), pattern, err)
	}
	return m[0]
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%s %q: %v: %s", name, args, err, stderr)
	}
	return string(out)
}

// entry is a file of a package: its permissions as ls shows them, and
// where a symlink points.
type entry struct{ perm, link string }

// debFiles lists a .deb's files and symlinks (dpkg-deb -c), not its
// directories.
func debFiles(t *testing.T, deb string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	line := regexp.MustCompile(`^(\S+) root/root +\d+ \S+ \S+ \./(\S+?)(?: -> (\S+))?$`)
	for _, l := range strings.Split(strings.TrimSpace(run(t, "dpkg-deb", "-c", deb)), "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("%s: a line not owned by root/root, or unread: %q", deb, l)
		}
		if m[1][0] != 'd' {
			out["/"+m[2]] = entry{perm: m[1][1:], link: m[3]}
		}
	}
	return out
}

// rpmFiles lists an .rpm's files and symlinks, not its directories.
func rpmFiles(t *testing.T, rpm string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	for _, l := range strings.Split(strings.TrimRight(run(t, "rpm", "-qp", "--qf", `[%{FILENAMES}\t%{FILEMODES:perms}\t%{FILEUSERNAME}:%{FILEGROUPNAME}\t%{FILELINKTOS}\n]`, rpm), "\n"), "\n") {
		f := strings.Split(l, "\t")
		if len(f) != 4 || f[2] != "root:root" {
			t.Fatalf("%s: a line not owned by root:root, or unread: %q", rpm, l)
		}
		if f[1][0] != 'd' {
			out[f[0]] = entry{perm: f[1][1:], link: f[3]}
		}
	}
	return out
}

// want is what each package holds: make install-bin's, install-host's and
// install-guest's files with PREFIX=/usr; roles are the binary's links.
func want(t *testing.T, roles []string) map[string]map[string]entry {
	t.Helper()
	bin := map[string]entry{"/usr/bin/katatrace": {perm: "rwxr-xr-x"}}
	for _, r := range roles {
		bin["/usr/bin/"+r] = entry{link: "katatrace"}
	}
	file := entry{perm: "rw-r--r--"}
	return map[string]map[string]entry{
		"katatrace": bin,
		"katatrace-host": {
			"/usr/lib/systemd/system/kata-trace-forwarder.service": file,
			"/usr/lib/systemd/system/vsock-to-udp-server.service":  file,
			"/usr/lib/systemd/system/vsock-to-text-server.service": file,
			"/usr/lib/tmpfiles.d/katatrace.conf":                   file,
			"/usr/share/katatrace/hybrid-vsock.conf":               file,
		},
		"katatrace-guest": {
			"/usr/lib/systemd/system/kata-agent.service.d/katatrace.conf":                              file,
			"/usr/lib/systemd/system/jaeger-client-socat-redirector.service":                           file,
			"/usr/lib/systemd/system/kata-journald-host-redirect.service":                              file,
			"/usr/lib/systemd/journald.conf.d/katatrace.conf":                                          file,
			"/usr/lib/systemd/system/syslog.service":                                                   {link: "kata-journald-host-redirect.service"},
			"/usr/lib/systemd/system/kata-containers.target.wants/kata-journald-host-redirect.service": {link: "../kata-journald-host-redirect.service"},
		},
	}
}

// roles are the links the packaged binary makes for itself.
func roles(t *testing.T, deb string) []string {
	t.Helper()
	root, links := t.TempDir(), t.TempDir()
	run(t, "dpkg-deb", "-x", deb, root)
	run(t, filepath.Join(root, "usr/bin/katatrace"), "links", links, "--log-level=warn")
	es, err := os.ReadDir(links)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	if !slices.Contains(out, "kata-trace-forwarder") {
		t.Fatalf("the binary's links %q lack kata-trace-forwarder", out)
	}
	return out
}

// TestPackageContents: each .deb and .rpm holds what make's install
// targets install, with their modes and links, the units with /usr/bin in
// ExecStart=, and the units' packages depend on the binary's exact
// version.
func TestPackageContents(t *testing.T) {
	dir := dist(t)
	wants := want(t, roles(t, pkg(t, dir, "katatrace", "deb")))
	version := strings.TrimSpace(run(t, "dpkg-deb", "-f", pkg(t, dir, "katatrace", "deb"), "Version"))
	for _, format := range []string{"deb", "rpm"} {
		t.Run(format, func(t *testing.T) {
			if _, err := exec.LookPath("rpm"); err != nil && format == "rpm" {
				t.Skip("rpm is not installed (.ci/run installs it): the .rpm is not read")
			}
			for name, files := range wants {
				t.Run(name, func(t *testing.T) {
					p := pkg(t, dir, name, format)
					got := map[string]func(*testing.T, string) map[string]entry{"deb": debFiles, "rpm": rpmFiles}[format](t, p)
					for path, w := range files {
						g, ok := got[path]
						if !ok {
							t.Errorf("%s: no %s", p, path)
						} else if w.link != g.link || (w.link == "" && w.perm != g.perm) {
							t.Errorf("%s: %s is %+v, want %+v", p, path, g, w)
						}
					}
					for path := range got {
						if _, ok := files[path]; !ok {
							t.Errorf("%s: %s, which make's install target does not install", p, path)
						}
					}
					if name == "katatrace" {
						return
					}
					var deps string
					if format == "deb" {
						deps = run(t, "dpkg-deb", "-f", p, "Depends")
					} else {
						deps = run(t, "rpm", "-qpR", p)
					}
					if !strings.Contains(deps, "katatrace (= "+version+")") && !strings.Contains(deps, "katatrace = "+version) {
						t.Errorf("%s depends on %q, want katatrace of version %s", p, deps, version)
					}
				})
			}
			// A unit as installed: ExecStart= at /usr/bin.
			root := t.TempDir()
			p := pkg(t, dir, "katatrace-host", format)
			if format == "deb" {
				run(t, "dpkg-deb", "-x", p, root)
			} else {
				cmd := exec.Command("sh", "-c", `rpm2cpio "$1" | cpio -idm --quiet`, "sh", p)
				cmd.Dir = root
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("rpm2cpio %s: %v: %s", p, err, out)
				}
			}
			unit, err := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/kata-trace-forwarder.service"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(unit, []byte("ExecStart=/usr/bin/kata-trace-forwarder ")) || bytes.Contains(unit, []byte("@BINDIR@")) {
				t.Errorf("%s: the forwarder's unit does not start /usr/bin/kata-trace-forwarder:\n%s", p, unit)
			}
		})
	}
}

// scripts are a host package's maintainer scripts, by dpkg's names.
func scripts(t *testing.T, format, p string) map[string]string {
	t.Helper()
	out := map[string]string{}
	if format == "deb" {
		dir := t.TempDir()
		run(t, "dpkg-deb", "-e", p, dir)
		for _, s := range []string{"postinst", "prerm", "postrm"} {
			b, err := os.ReadFile(filepath.Join(dir, s))
			if err != nil {
				t.Fatal(err)
			}
			out[s] = string(b)
		}
		return out
	}
	for s, tag := range map[string]string{"postinst": "POSTIN", "prerm": "PREUN", "postrm": "POSTUN"} {
		out[s] = run(t, "rpm", "-qp", "--qf", "%{"+tag+"}", p)
		if prog := strings.TrimSpace(run(t, "rpm", "-qp", "--qf", "%{"+tag+"PROG}", p)); prog != "/bin/sh" {
			t.Fatalf("%s: %s runs under %q, want /bin/sh", p, s, prog)
		}
	}
	return out
}

// TestMaintainerScripts runs the host package's scripts as dpkg and rpm
// call them, with systemctl a stand-in that logs its calls: an upgrade
// restarts the running units and never stops them; a first install
// enables the forwarder without starting it; only a removal stops; dpkg's
// removal leaves the units enabled and its purge disables them.
func TestMaintainerScripts(t *testing.T) {
	dir := dist(t)
	units := "kata-trace-forwarder.service vsock-to-udp-server.service vsock-to-text-server.service"
	const (
		tmpfiles = "systemd-tmpfiles --create /usr/lib/tmpfiles.d/katatrace.conf"
		reload   = "systemctl daemon-reload"
	)
	enable := "systemctl enable kata-trace-forwarder.service"
	restart := "systemctl try-restart " + units
	stop := []string{"systemctl disable " + units, "systemctl stop " + units}
	type call struct {
		script string
		args   []string
		booted bool // systemd runs (not an image being built)
		want   []string
	}
	cases := map[string][]call{
		"deb": {
			{"postinst", []string{"configure", ""}, true, []string{tmpfiles, enable, reload}},
			{"postinst", []string{"configure"}, true, []string{tmpfiles, enable, reload}},
			{"postinst", []string{"configure", ""}, false, []string{tmpfiles, enable}},
			{"postinst", []string{"configure", "1.0.0-1"}, true, []string{tmpfiles, reload, restart}},
			{"postinst", []string{"abort-upgrade", "1.0.1-1"}, true, nil},
			{"prerm", []string{"upgrade", "1.0.1-1"}, true, nil},
			{"prerm", []string{"failed-upgrade", "1.0.1-1"}, true, nil},
			{"prerm", []string{"deconfigure", "in-favour", "x", "1"}, true, nil},
			{"prerm", []string{"remove"}, true, stop[1:]},
			{"prerm", []string{"remove"}, false, nil},
			{"postrm", []string{"upgrade", "1.0.1-1"}, true, nil},
			{"postrm", []string{"remove"}, true, []string{reload}},
			{"postrm", []string{"purge"}, true, []string{stop[0], reload}},
			{"postrm", []string{"purge"}, false, stop[:1]},
		},
		"rpm": {
			{"postinst", []string{"1"}, true, []string{tmpfiles, enable, reload}},
			{"postinst", []string{"2"}, true, []string{tmpfiles, reload, restart}},
			{"prerm", []string{"1"}, true, nil},
			{"prerm", []string{"0"}, true, stop},
			{"postrm", []string{"1"}, true, nil},
			{"postrm", []string{"0"}, true, []string{reload}},
		},
	}
	for _, format := range []string{"deb", "rpm"} {
		t.Run(format, func(t *testing.T) {
			if _, err := exec.LookPath("rpm"); err != nil && format == "rpm" {
				t.Skip("rpm is not installed (.ci/run installs it): the .rpm's scripts are not read")
			}
			ss := scripts(t, format, pkg(t, dir, "katatrace-host", format))
			for _, c := range cases[format] {
				t.Run(c.script+" "+strings.Join(c.args, " "), func(t *testing.T) {
					got := runScript(t, ss[c.script], c.args, c.booted)
					if !slices.Equal(got, c.want) {
						t.Errorf("calls %q, want %q", got, c.want)
					}
				})
			}
		})
	}
}

// TestReinstall runs the host package's scripts in the order dpkg and rpm
// run them through a package's life, the node's own systemctl disable
// among them, and follows kata-trace-forwarder.service's enablement
// through their calls: a package removed (dpkg -r, the config-files
// state) and installed again, whose postinst gets an upgrade's
// "configure <old version>", finds the unit enabled as the first install
// left it; a purge disables it; an upgrade keeps the node's disable.
func TestReinstall(t *testing.T) {
	dir := dist(t)
	type step struct {
		script string // "node disable": the node's systemctl disable
		args   []string
	}
	first := map[string]step{"deb": {"postinst", []string{"configure", ""}}, "rpm": {"postinst", []string{"1"}}}
	cases := []struct {
		format, name string
		steps        []step
		enabled      bool
	}{
		{"deb", "removed, reinstalled", []step{{"prerm", []string{"remove"}}, {"postrm", []string{"remove"}}, {"postinst", []string{"configure", "1.0.0-1"}}}, true},
		{"deb", "removed, purged", []step{{"prerm", []string{"remove"}}, {"postrm", []string{"remove"}}, {"postrm", []string{"purge"}}}, false},
		{"deb", "removed, purged, reinstalled", []step{{"prerm", []string{"remove"}}, {"postrm", []string{"remove"}}, {"postrm", []string{"purge"}}, {"postinst", []string{"configure", ""}}}, true},
		{"deb", "disabled, upgraded", []step{{"node disable", nil}, {"prerm", []string{"upgrade", "1.0.1-1"}}, {"postrm", []string{"upgrade", "1.0.1-1"}}, {"postinst", []string{"configure", "1.0.0-1"}}}, false},
		{"rpm", "removed", []step{{"prerm", []string{"0"}}, {"postrm", []string{"0"}}}, false},
		{"rpm", "removed, reinstalled", []step{{"prerm", []string{"0"}}, {"postrm", []string{"0"}}, {"postinst", []string{"1"}}}, true},
		{"rpm", "disabled, upgraded", []step{{"node disable", nil}, {"postinst", []string{"2"}}, {"prerm", []string{"1"}}, {"postrm", []string{"1"}}}, false},
	}
	ss := map[string]map[string]string{}
	for _, c := range cases {
		t.Run(c.format+" "+c.name, func(t *testing.T) {
			if _, err := exec.LookPath("rpm"); err != nil && c.format == "rpm" {
				t.Skip("rpm is not installed (.ci/run installs it): the .rpm's scripts are not read")
			}
			if ss[c.format] == nil {
				ss[c.format] = scripts(t, c.format, pkg(t, dir, "katatrace-host", c.format))
			}
			enabled := false
			for _, s := range append([]step{first[c.format]}, c.steps...) {
				calls := []string{"systemctl disable kata-trace-forwarder.service"}
				if s.script != "node disable" {
					calls = runScript(t, ss[c.format][s.script], s.args, true)
				}
				for _, call := range calls {
					if f := strings.Fields(call); len(f) > 2 && f[0] == "systemctl" && slices.Contains(f[2:], "kata-trace-forwarder.service") {
						switch f[1] {
						case "enable":
							enabled = true
						case "disable":
							enabled = false
						}
					}
				}
			}
			if enabled != c.enabled {
				t.Errorf("kata-trace-forwarder.service enabled: %v, want %v", enabled, c.enabled)
			}
		})
	}
}

// runScript runs script with args, systemctl and systemd-tmpfiles logging
// their calls instead of acting: its calls.
func runScript(t *testing.T, script string, args []string, booted bool) []string {
	t.Helper()
	dir := t.TempDir()
	bin, log := filepath.Join(dir, "bin"), filepath.Join(dir, "calls")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"systemctl", "systemd-tmpfiles"} {
		stub := "#!/bin/sh\necho \"" + name + " $*\" >> " + log + "\n"
		if err := os.WriteFile(filepath.Join(bin, name), []byte(stub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "script")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	running := filepath.Join(dir, "no-systemd")
	if booted {
		running = dir
	}
	cmd := exec.Command("/bin/sh", append([]string{path}, args...)...)
	cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin", "KATATRACE_PKG_SYSTEMD_RUN=" + running}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the script failed: %v: %s", err, out)
	}
	b, err := os.ReadFile(log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}
