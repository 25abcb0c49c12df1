// Package test renders deploy/helm/katatrace with bin/helm (make
// chart-test builds it, tools/helm) and decodes every object strictly
// into the Kubernetes API's types (the PodMonitor into the Prometheus
// operator's): a field they do not know, or a kind this test does not
// know, fails. Then it checks what the chart is for.
package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const (
	chartDir = "../katatrace"
	repoRoot = "../../.."
	// The chart's release and namespace for the plain manifests: Kata's
	// quick start installs kata-deploy as release kata-deploy in
	// kata-system (docs/quick-start-guide.md).
	manifestRelease   = "katatrace"
	manifestNamespace = "kata-system"
	manifestPath      = repoRoot + "/deploy/kubernetes/katatrace.yaml"
	allOn             = "testdata/all-on.yaml"
)

// helm is the helm binary: $HELM, else the repository's bin/helm.
func helm(t *testing.T) string {
	t.Helper()
	h := os.Getenv("HELM")
	if h == "" {
		h = repoRoot + "/bin/helm"
	}
	if _, err := os.Stat(h); err != nil {
		t.Fatalf("no helm (%v): run make chart-test, which builds bin/helm from tools/helm", err)
	}
	return h
}

// render runs helm template with args (values files, --set), returning
// its output, or its error output as an error.
func render(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helm(t), append([]string{"template", manifestRelease, chartDir, "--namespace", manifestNamespace}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("helm template %v: %v: %s", args, err, errOut.String())
	}
	return out.String(), nil
}

// objects are a render's objects by kind.
type objects struct {
	daemonSets  []*appsv1.DaemonSet
	secrets     []*corev1.Secret
	podMonitors []*monitoringv1.PodMonitor
	kinds       []string // KIND/NAME, in order
}

// decode splits a render into documents and decodes each strictly into
// its type by apiVersion and kind.
func decode(rendered string) (*objects, error) {
	var o objects
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(rendered)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return &o, nil
		}
		if err != nil {
			return nil, err
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("%w:\n%s", err, doc)
		}
		if string(j) == "null" {
			continue // a document of comments only
		}
		var tm metav1.TypeMeta
		if err := json.Unmarshal(j, &tm); err != nil {
			return nil, err
		}
		var into interface{ GetName() string }
		switch tm.APIVersion + " " + tm.Kind {
		case "apps/v1 DaemonSet":
			ds := new(appsv1.DaemonSet)
			o.daemonSets, into = append(o.daemonSets, ds), ds
		case "v1 Secret":
			s := new(corev1.Secret)
			o.secrets, into = append(o.secrets, s), s
		case "monitoring.coreos.com/v1 PodMonitor":
			pm := new(monitoringv1.PodMonitor)
			o.podMonitors, into = append(o.podMonitors, pm), pm
		default:
			return nil, fmt.Errorf("a kind this test does not know: %s %s", tm.APIVersion, tm.Kind)
		}
		dec := json.NewDecoder(bytes.NewReader(j))
		dec.DisallowUnknownFields()
		if err := dec.Decode(into); err != nil {
			return nil, fmt.Errorf("%s: %w", tm.Kind, err)
		}
		o.kinds = append(o.kinds, tm.Kind+"/"+into.GetName())
	}
}

func mustRender(t *testing.T, args ...string) *objects {
	t.Helper()
	out, err := render(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	o, err := decode(out)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestDecodeIsStrict(t *testing.T) {
	for _, c := range []struct{ name, doc, want string }{
		{"unknown field", "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec: {template: {spec: {hostUser: true}}}\n", `unknown field "hostUser"`},
		{"unknown kind", "apiVersion: v1\nkind: ConfigMapp\nmetadata: {name: x}\n", "a kind this test does not know"},
		{"wrong type", "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\nstringData: {a: [1]}\n", "cannot unmarshal"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := decode(c.doc); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("decode: %v, want %q", err, c.want)
			}
		})
	}
}

func TestLint(t *testing.T) {
	for _, args := range [][]string{nil, {"--values", allOn}} {
		out, err := exec.Command(helm(t), append([]string{"lint", "--strict", chartDir}, args...)...).CombinedOutput()
		if err != nil {
			t.Errorf("helm lint --strict %v: %v\n%s", args, err, out)
		}
	}
}

// TestManifests: deploy/kubernetes/katatrace.yaml is the chart rendered
// with its defaults; KATATRACE_UPDATE_MANIFESTS=1 (make manifests)
// writes it.
func TestManifests(t *testing.T) {
	out, err := render(t)
	if err != nil {
		t.Fatal(err)
	}
	want := "# katatrace for kubectl apply: deploy/helm/katatrace rendered with its\n" +
		"# default values (make manifests), release " + manifestRelease + " in namespace " + manifestNamespace + ":\n" +
		"#   kubectl create namespace " + manifestNamespace + " && kubectl apply -f katatrace.yaml\n" + out
	if os.Getenv("KATATRACE_UPDATE_MANIFESTS") == "1" {
		if err := os.WriteFile(manifestPath, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(manifestPath)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("%s differs from a fresh render of the chart: run make manifests", manifestPath)
	}
	o, err := decode(string(got))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("deploy/kubernetes/katatrace.yaml: %s", strings.Join(o.kinds, ", "))
}

// unitFroms reads the --from flags of a systemd unit's ExecStart=.
func unitFroms(t *testing.T, unit string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "scripts/systemd", unit))
	if err != nil {
		t.Fatal(err)
	}
	// ExecStart= and its continuation lines; comments name --from too.
	exec := regexp.MustCompile(`(?m)^ExecStart=(?:.*\\\n)*.*`).FindString(string(b))
	var froms []string
	for _, m := range regexp.MustCompile(`--from (\S+)`).FindAllStringSubmatch(exec, -1) {
		froms = append(froms, m[1])
	}
	if len(froms) == 0 {
		t.Fatalf("%s: no --from", unit)
	}
	return froms
}

// flag returns the values of --name=VALUE in args.
func flag(args []string, name string) []string {
	var vs []string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			vs = append(vs, v)
		}
	}
	return vs
}

func container(cs []corev1.Container, name string) *corev1.Container {
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	return nil
}

func volume(p *corev1.PodSpec, name string) *corev1.Volume {
	for i := range p.Volumes {
		if p.Volumes[i].Name == name {
			return &p.Volumes[i]
		}
	}
	return nil
}

// hostPathAt returns the host path mounted at path in c, with the mount.
func hostPathAt(p *corev1.PodSpec, c *corev1.Container, path string) (string, *corev1.VolumeMount) {
	for i, m := range c.VolumeMounts {
		if m.MountPath == path {
			if v := volume(p, m.Name); v != nil && v.HostPath != nil {
				return v.HostPath.Path, &c.VolumeMounts[i]
			}
		}
	}
	return "", nil
}

// want describes what a render must hold, from its values.
type want struct {
	daemonSets       []string // names
	seccomp          string   // Localhost, RuntimeDefault, Unconfined
	kubeletRoot      string
	localhostProfile string
	handoverDir      string
	metricsPort      int
	drainTimeout     time.Duration
	nodeSelector     map[string]string
	headersSecret    string // the Secret the OTLP containers' headers come from ("": none)
	headersEnv       string
	madeSecret       bool // the chart makes it
	podMonitor       bool
}

// roles are each host role's container, vsock port and unit.
var roles = map[string]struct {
	role, unit string
	port       int
}{
	"forwarder": {"kata-trace-forwarder", "kata-trace-forwarder.service", 10240},
	"udp":       {"vsock-to-udp-server", "vsock-to-udp-server.service", 6831},
	"text":      {"vsock-to-text-server", "vsock-to-text-server.service", 5140},
}

func TestChart(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		want want
	}{
		{"defaults", nil, want{
			daemonSets: []string{"katatrace-forwarder"}, seccomp: "Localhost", kubeletRoot: "/var/lib/kubelet",
			localhostProfile: "katatrace/katatrace.json", handoverDir: "/run/katatrace", metricsPort: 9464,
			drainTimeout: 5 * time.Second, nodeSelector: map[string]string{"katacontainers.io/kata-runtime": "true"}}},
		{"all on", []string{"--values", allOn}, want{
			daemonSets: []string{"katatrace-forwarder", "katatrace-host-relays"}, seccomp: "Localhost", kubeletRoot: "/var/lib/k0s/kubelet",
			localhostProfile: "ops/katatrace-v1.json", handoverDir: "/run/katatrace-test", metricsPort: 9500,
			drainTimeout: 20 * time.Second, nodeSelector: map[string]string{"katacontainers.io/kata-runtime": "true"},
			headersSecret: "katatrace-otlp-headers", headersEnv: "OTEL_EXPORTER_OTLP_TRACES_HEADERS", madeSecret: true, podMonitor: true}},
		{"an existing headers Secret", []string{"--set", "otlp.headers.existingSecret=vendor-key", "--set", "otlp.headers.key=h"}, want{
			daemonSets: []string{"katatrace-forwarder"}, seccomp: "Localhost", kubeletRoot: "/var/lib/kubelet",
			localhostProfile: "katatrace/katatrace.json", handoverDir: "/run/katatrace", metricsPort: 9464,
			drainTimeout: 5 * time.Second, nodeSelector: map[string]string{"katacontainers.io/kata-runtime": "true"},
			headersSecret: "vendor-key", headersEnv: "OTEL_EXPORTER_OTLP_HEADERS"}},
		{"runtime default seccomp", []string{"--set", "seccomp.profile=RuntimeDefault", "--set", "hostRelays.enabled=true"}, want{
			daemonSets: []string{"katatrace-forwarder", "katatrace-host-relays"}, seccomp: "RuntimeDefault", handoverDir: "/run/katatrace", metricsPort: 9464,
			drainTimeout: 5 * time.Second, nodeSelector: map[string]string{"katacontainers.io/kata-runtime": "true"}}},
		{"unconfined, another node label", []string{"--set", "seccomp.profile=Unconfined", "--set-json", `nodeSelector={"katacontainers.io/kata-runtime":null,"kata":"yes"}`}, want{
			daemonSets: []string{"katatrace-forwarder"}, seccomp: "Unconfined", handoverDir: "/run/katatrace", metricsPort: 9464,
			drainTimeout: 5 * time.Second, nodeSelector: map[string]string{"kata": "yes"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := mustRender(t, c.args...)
			t.Logf("objects: %s", strings.Join(o.kinds, ", "))
			checkObjects(t, o, c.want)
		})
	}
}

func checkObjects(t *testing.T, o *objects, w want) {
	var names []string
	for _, ds := range o.daemonSets {
		names = append(names, ds.Name)
		t.Run(ds.Name, func(t *testing.T) { checkDaemonSet(t, ds, w) })
	}
	if !slices.Equal(names, w.daemonSets) {
		t.Errorf("DaemonSets %v, want %v", names, w.daemonSets)
	}
	// The headers' Secret: made from the value, or another's named.
	switch {
	case w.madeSecret && (len(o.secrets) != 1 || o.secrets[0].Name != w.headersSecret || o.secrets[0].StringData["headers"] == ""):
		t.Errorf("Secrets %v, want %s with the headers", o.kinds, w.headersSecret)
	case !w.madeSecret && len(o.secrets) != 0:
		t.Errorf("Secrets rendered: %v", o.kinds)
	}
	if !w.podMonitor {
		if len(o.podMonitors) != 0 {
			t.Errorf("a PodMonitor by default: %v", o.kinds)
		}
		return
	}
	if len(o.podMonitors) != 1 {
		t.Fatalf("PodMonitors: %v", o.kinds)
	}
	checkPodMonitor(t, o.podMonitors[0], o.daemonSets)
}

// checkPodMonitor: it selects every DaemonSet's pods, and each of its
// endpoints is a port some pod names.
func checkPodMonitor(t *testing.T, pm *monitoringv1.PodMonitor, dss []*appsv1.DaemonSet) {
	sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	ports := map[string]bool{}
	for _, ds := range dss {
		if !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
			t.Errorf("PodMonitor selector %v does not select %s's pods %v", sel, ds.Name, ds.Spec.Template.Labels)
		}
		for _, c := range ds.Spec.Template.Spec.Containers {
			for _, p := range c.Ports {
				ports[p.Name] = true
			}
		}
	}
	seen := map[string]bool{}
	for _, e := range pm.Spec.PodMetricsEndpoints {
		if e.Port == nil || !ports[*e.Port] || e.Path != "/metrics" {
			t.Errorf("PodMonitor endpoint %+v: not a metrics port of the pods (%v)", e, ports)
			continue
		}
		seen[*e.Port] = true
		// The alerts name the node (deploy/prometheus): its label is
		// the pod's node's name.
		node := false
		for _, r := range e.RelabelConfigs {
			node = node || r.TargetLabel == "node" && slices.Equal(r.SourceLabels, []monitoringv1.LabelName{"__meta_kubernetes_pod_node_name"}) &&
				(r.Action == "" || r.Action == "replace")
		}
		if !node {
			t.Errorf("PodMonitor endpoint %s: no node label from __meta_kubernetes_pod_node_name", *e.Port)
		}
	}
	if len(seen) != len(ports) {
		t.Errorf("PodMonitor scrapes %v of the pods' ports %v", seen, ports)
	}
}

func checkDaemonSet(t *testing.T, ds *appsv1.DaemonSet, w want) {
	p := &ds.Spec.Template.Spec
	// The rollout: the new pod beside the old one, the old one kept until
	// the new one is ready.
	if u := ds.Spec.UpdateStrategy; u.Type != appsv1.RollingUpdateDaemonSetStrategyType || u.RollingUpdate == nil ||
		u.RollingUpdate.MaxSurge == nil || u.RollingUpdate.MaxSurge.String() != "1" ||
		u.RollingUpdate.MaxUnavailable == nil || u.RollingUpdate.MaxUnavailable.String() != "0" {
		t.Errorf("updateStrategy %+v, want RollingUpdate maxSurge 1 maxUnavailable 0", u)
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("selector %v does not match the pods' labels %v (%v)", ds.Spec.Selector, ds.Spec.Template.Labels, err)
	}
	if p.HostUsers == nil || !*p.HostUsers {
		t.Errorf("hostUsers %v, want true: Kata's directories are the host's root's", p.HostUsers)
	}
	if p.HostNetwork || p.HostPID || p.HostIPC {
		t.Errorf("host namespaces: network %v, pid %v, ipc %v", p.HostNetwork, p.HostPID, p.HostIPC)
	}
	if !maps(p.NodeSelector, w.nodeSelector) {
		t.Errorf("nodeSelector %v, want %v", p.NodeSelector, w.nodeSelector)
	}
	if g := p.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= w.drainTimeout {
		t.Errorf("terminationGracePeriodSeconds %v, not above the drain timeout %v", g, w.drainTimeout)
	}
	if a := ds.Spec.Template.Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(w.metricsPort) || a["prometheus.io/path"] != "/metrics" {
		t.Errorf("scrape annotations %v, want port %d", a, w.metricsPort)
	}
	// Per container, not the pod's: the init container that installs the
	// Localhost profile cannot itself start under it on a new node.
	if p.SecurityContext != nil && p.SecurityContext.SeccompProfile != nil {
		t.Errorf("the pod's seccompProfile %+v would hold the init container too", p.SecurityContext.SeccompProfile)
	}
	checkSeccompInstall(t, p, w)
	if len(p.Containers) == 0 {
		t.Fatal("no containers")
	}
	metricsPorts := map[int32]bool{}
	for i := range p.Containers {
		c := &p.Containers[i]
		t.Run(c.Name, func(t *testing.T) {
			port := checkContainer(t, p, c, w)
			if metricsPorts[port] {
				t.Errorf("metrics port %d taken twice in one pod", port)
			}
			metricsPorts[port] = true
		})
	}
	if !metricsPorts[int32(w.metricsPort)] {
		t.Errorf("no container serves metrics on %d (the annotations' port): %v", w.metricsPort, metricsPorts)
	}
}

func maps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// checkSeccompInstall: with a Localhost profile, an init container of the
// image writes it exactly where the kubelet will read the containers'
// localhostProfile from.
func checkSeccompInstall(t *testing.T, p *corev1.PodSpec, w want) {
	if w.seccomp != "Localhost" {
		if len(p.InitContainers) != 0 {
			t.Errorf("init containers without a Localhost profile: %v", p.InitContainers)
		}
		return
	}
	ic := container(p.InitContainers, "seccomp-profile")
	if ic == nil || len(p.InitContainers) != 1 {
		t.Fatalf("init containers %v, want seccomp-profile", p.InitContainers)
	}
	if ic.Image != p.Containers[0].Image {
		t.Errorf("init container's image %s, the roles' %s", ic.Image, p.Containers[0].Image)
	}
	if len(ic.Command) < 2 || ic.Command[0] != "/usr/bin/katatrace" || ic.Command[1] != "seccomp-profile" {
		t.Fatalf("init container runs %v, want katatrace seccomp-profile", ic.Command)
	}
	dests := flag(ic.Command, "write")
	if len(dests) != 1 {
		t.Fatalf("init container's --write: %v", ic.Command)
	}
	host, m := hostPathAt(p, ic, filepath.Dir(dests[0]))
	if m == nil {
		t.Fatalf("--write %s: its directory is no hostPath mount of the init container", dests[0])
	}
	written := filepath.Join(host, filepath.Base(dests[0]))
	if want := filepath.Join(w.kubeletRoot, "seccomp", w.localhostProfile); written != want {
		t.Errorf("the init container writes the node's %s, the kubelet reads %s", written, want)
	}
	checkSecurity(t, ic, "RuntimeDefault", "")
}

// checkSecurity: uid 0, no capability, no escalation, a read-only root,
// the seccomp profile asked for.
func checkSecurity(t *testing.T, c *corev1.Container, profile, localhost string) {
	s := c.SecurityContext
	if s == nil {
		t.Fatal("no securityContext")
	}
	if s.RunAsUser == nil || *s.RunAsUser != 0 {
		t.Errorf("runAsUser %v, want 0 (Kata's VM directories are root's, 0750)", s.RunAsUser)
	}
	if s.Capabilities == nil || !slices.Equal(s.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(s.Capabilities.Add) != 0 {
		t.Errorf("capabilities %+v, want all dropped and none added", s.Capabilities)
	}
	if s.AllowPrivilegeEscalation == nil || *s.AllowPrivilegeEscalation {
		t.Errorf("allowPrivilegeEscalation %v", s.AllowPrivilegeEscalation)
	}
	if s.ReadOnlyRootFilesystem == nil || !*s.ReadOnlyRootFilesystem {
		t.Errorf("readOnlyRootFilesystem %v", s.ReadOnlyRootFilesystem)
	}
	if s.Privileged != nil && *s.Privileged {
		t.Error("privileged")
	}
	sp := s.SeccompProfile
	if sp == nil || string(sp.Type) != profile || (localhost != "") != (sp.LocalhostProfile != nil) ||
		(sp.LocalhostProfile != nil && *sp.LocalhostProfile != localhost) {
		t.Errorf("seccompProfile %+v, want %s %s", sp, profile, localhost)
	}
}

// checkContainer checks a role's container, returning its metrics port.
func checkContainer(t *testing.T, p *corev1.PodSpec, c *corev1.Container, w want) int32 {
	r, ok := roles[c.Name]
	if !ok {
		t.Fatalf("container %s: no role this test knows", c.Name)
	}
	// The image's link for the role (cmd/katatrace-image puts one per
	// role in /usr/bin).
	if !slices.Equal(c.Command, []string{"/usr/bin/" + r.role}) {
		t.Errorf("command %v, want /usr/bin/%s", c.Command, r.role)
	}
	localhost := ""
	if w.seccomp == "Localhost" {
		localhost = w.localhostProfile
	}
	checkSecurity(t, c, w.seccomp, localhost)

	// --from: the unit's set (the forwarder's, or the 1.x relays' with the
	// hybrid-vsock drop-in's), vsock's left out under RuntimeDefault.
	var want []string
	for _, f := range unitFroms(t, "kata-trace-forwarder.service") {
		f = strings.ReplaceAll(f, "10240", strconv.Itoa(r.port))
		if w.seccomp == "RuntimeDefault" && strings.HasPrefix(f, "vsock://") {
			continue
		}
		want = append(want, f)
	}
	if r.role != "kata-trace-forwarder" && w.seccomp != "RuntimeDefault" {
		// The 1.x relays' units listen on vsock alone; the chart adds the
		// drop-in's hybrid-vsock sockets.
		if u := unitFroms(t, r.unit); !slices.Contains(want, u[0]) {
			t.Errorf("%s's --from %s is not among the container's", r.unit, u[0])
		}
	}
	if got := flag(c.Args, "from"); !slices.Equal(got, want) {
		t.Errorf("--from %v\nwant %v", got, want)
	}

	// Hybrid vsock: Kata's run directories at the same paths, VM
	// directories made later propagated in.
	for _, dir := range []string{"/run/vc", "/run/kata"} {
		host, m := hostPathAt(p, c, dir)
		if m == nil || host != dir {
			t.Errorf("%s: no hostPath mount of the host's %s (%q)", dir, dir, host)
			continue
		}
		if m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer || m.ReadOnly {
			t.Errorf("%s: mount %+v, want HostToContainer propagation, writable", dir, m)
		}
	}

	// The handover socket: in a hostPath directory both the old pod and
	// the new one see.
	hs := flag(c.Args, "handover-socket")
	if len(hs) != 1 || hs[0] != w.handoverDir+"/"+r.role+".sock" {
		t.Errorf("--handover-socket %v, want %s/%s.sock", hs, w.handoverDir, r.role)
	} else if host, m := hostPathAt(p, c, w.handoverDir); m == nil || host != w.handoverDir {
		t.Errorf("--handover-socket %s: its directory is not the host's %s", hs[0], w.handoverDir)
	} else if v := volume(p, m.Name); v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectoryOrCreate {
		t.Errorf("handover hostPath type %v, want DirectoryOrCreate", v.HostPath.Type)
	}

	// The node's /proc, read-only, where --host-proc looks (a QEMU
	// guest's sandbox ID), and not the host's PID namespace.
	if hp := flag(c.Args, "host-proc"); len(hp) != 1 {
		t.Errorf("--host-proc %v, want one", hp)
	} else if host, m := hostPathAt(p, c, hp[0]); m == nil || host != "/proc" || !m.ReadOnly {
		t.Errorf("--host-proc %s: not the node's /proc read-only (%q, %+v)", hp[0], host, m)
	}

	// Metrics and probes: one named port, the one --metrics-listen serves,
	// /readyz for readiness and /healthz for liveness on it.
	ml := flag(c.Args, "metrics-listen")
	if len(ml) != 1 {
		t.Fatalf("--metrics-listen %v", ml)
	}
	// Every address of the pod, IPv4 and IPv6 where there is IPv6 (a
	// kernel with ipv6.disable=1 refuses [::]).
	m := regexp.MustCompile(`^tcp://:(\d+)$`).FindStringSubmatch(ml[0])
	if m == nil {
		t.Fatalf("--metrics-listen %s: want tcp://:PORT (every address of the pod)", ml[0])
	}
	port, _ := strconv.Atoi(m[1])
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != int32(port) || c.Ports[0].Name == "" {
		t.Fatalf("ports %+v, want one named, %d", c.Ports, port)
	}
	for _, pr := range []struct {
		probe *corev1.Probe
		path  string
	}{{c.ReadinessProbe, "/readyz"}, {c.LivenessProbe, "/healthz"}} {
		if pr.probe == nil || pr.probe.HTTPGet == nil || pr.probe.HTTPGet.Path != pr.path || pr.probe.HTTPGet.Port.String() != c.Ports[0].Name {
			t.Errorf("probe %+v, want GET %s on port %s", pr.probe, pr.path, c.Ports[0].Name)
		}
	}

	// --drain-timeout below the grace period (checked on the pod).
	if d := flag(c.Args, "drain-timeout"); len(d) != 1 || d[0] != w.drainTimeout.String() {
		t.Errorf("--drain-timeout %v, want %v", d, w.drainTimeout)
	}

	// The OTLP headers: from the Secret, in OpenTelemetry's variable, for
	// the roles sending OTLP; the text relay (--to stdout) has none.
	otlp := false
	for _, to := range flag(c.Args, "to") {
		otlp = strings.HasPrefix(to, "otlp")
	}
	var headers *corev1.EnvVar
	env := map[string]string{}
	for i, e := range c.Env {
		env[e.Name] = e.Value
		if strings.HasPrefix(e.Name, "OTEL_EXPORTER_OTLP") {
			headers = &c.Env[i]
		}
	}
	switch {
	case w.headersSecret == "" || !otlp:
		if headers != nil {
			t.Errorf("headers %+v where none are given or sent", headers)
		}
	case headers == nil || headers.Name != w.headersEnv || headers.ValueFrom == nil || headers.ValueFrom.SecretKeyRef == nil ||
		headers.ValueFrom.SecretKeyRef.Name != w.headersSecret:
		t.Errorf("headers %+v, want %s from Secret %s", headers, w.headersEnv, w.headersSecret)
	}
	if env["KATATRACE_LOG_FORMAT"] == "" {
		t.Error("no KATATRACE_LOG_FORMAT")
	}
	if strings.Contains(strings.Join(c.Args, " "), "$(HOST_IP)") {
		if e := findEnv(c.Env, "HOST_IP"); e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "status.hostIP" {
			t.Errorf("$(HOST_IP) in the args, and HOST_IP is %+v", e)
		}
	}
	// The CA: a mounted file, given only where the destination is TLS.
	for _, ca := range flag(c.Args, "otlp-ca-file") {
		if !otlp || !strings.HasPrefix(flag(c.Args, "to")[0], "otlps") && !strings.HasPrefix(flag(c.Args, "to")[0], "otlphttps") {
			t.Errorf("--otlp-ca-file %s with --to %v", ca, flag(c.Args, "to"))
		}
		found := false
		for _, vm := range c.VolumeMounts {
			if filepath.Dir(ca) == vm.MountPath && vm.ReadOnly {
				v := volume(p, vm.Name)
				found = v != nil && (v.ConfigMap != nil || v.Secret != nil)
			}
		}
		if !found {
			t.Errorf("--otlp-ca-file %s: not in a mounted ConfigMap or Secret", ca)
		}
	}

	// Resources: requests and a memory limit.
	if c.Resources.Requests.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want requests (cpu, memory) and a memory limit", c.Resources)
	}
	return int32(port)
}

func findEnv(env []corev1.EnvVar, name string) *corev1.EnvVar {
	for i := range env {
		if env[i].Name == name {
			return &env[i]
		}
	}
	return nil
}

// TestRefused: values the schema or the chart's own checks refuse, each
// saying what is wrong.
func TestRefused(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"an unknown key", []string{"--set", "forwarder.replicas=2"}, "additional properties 'replicas' not allowed"},
		{"a misspelt top-level key", []string{"--set", "nodeselector.a=b"}, "additional properties 'nodeselector' not allowed"},
		{"a port as text", []string{"--set-string", "metrics.port=9464"}, "got string, want integer"},
		{"a seccomp profile kind", []string{"--set", "seccomp.profile=Default"}, "seccomp/profile"},
		{"a relative kubelet root", []string{"--set", "seccomp.kubeletRoot=var/lib/kubelet"}, "kubeletRoot"},
		{"a profile path out of the seccomp directory", []string{"--set", "seccomp.localhostProfile=../x.json"}, "localhostProfile"},
		{"a handover directory with a trailing slash", []string{"--set", "handover.hostDir=/run/katatrace/"}, "hostDir"},
		{"a handover directory too long for a socket", []string{"--set", "handover.hostDir=/" + strings.Repeat("d", 70)}, "hostDir"},
		{"a profile without its directory", []string{"--set", "seccomp.localhostProfile=katatrace.json"}, "localhostProfile"},
		{"a grace period within the drain", []string{"--set", "drainTimeout=30s"}, "terminationGracePeriodSeconds 30 must be longer than drainTimeout 30s"},
		{"a drain timeout without unit", []string{"--set", "drainTimeout=5"}, "drainTimeout"},
		{"a CA in the clear", []string{"--set", "otlp.ca.secretName=ca"}, "otlp.ca is for an OTLP destination over TLS"},
		{"two CAs", []string{"--set", "otlp.ca.secretName=ca", "--set", "otlp.ca.configMapName=ca", "--set", "to=otlps://c:4317"}, "not both"},
		{"two header sources", []string{"--set", "otlp.headers.value=a=b", "--set", "otlp.headers.existingSecret=s"}, "not both"},
		{"a destination scheme", []string{"--set", "to=grpc://c:4317"}, "/to"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := render(t, c.args...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("render: %v\nwant an error holding %q", err, c.want)
			}
		})
	}
}
