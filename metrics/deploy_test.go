package metrics

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v2"
)

// The alert rules and the dashboard shipped in deploy/ name only metrics
// the binary serves, with labels those metrics have: read from the
// collectors' descriptions, as registered by Serve for each kind of role,
// not from a scrape, where a vector without series (no guest yet) does
// not show.
const (
	alertRules = "../deploy/prometheus/katatrace-alerts.yaml"
	dashboard  = "../deploy/grafana/katatrace.json"
)

// servedMetric is one metric a role serves: its labels, and those the
// scrape adds (targetLabels); its help, which names the values of its
// reason label.
type servedMetric struct {
	labels map[string]bool
	help   string
}

// targetLabels are those a scrape gives every series of a target:
// instance and job, and under Kubernetes what the PodMonitor or the scrape
// config adds (node relabelled from the pod's).
var targetLabels = []string{"instance", "job", "namespace", "pod", "node", "container", "endpoint", "service"}

// served reads every description of what the roles register: the host
// relays' collector, the forwarder's, the guest relays', each beside what
// Serve adds (process, Go runtime, build info).
func served(t *testing.T) map[string]servedMetric {
	t.Helper()
	descRE := regexp.MustCompile(`^Desc\{fqName: "([^"]+)", help: (.*), constLabels: \{(.*)\}, variableLabels: \{([^}]*)\}\}$`)
	constRE := regexp.MustCompile(`(?:^|,)([a-zA-Z_][a-zA-Z0-9_]*)="`)
	out := map[string]servedMetric{}
	for _, c := range []prometheus.Collector{ForServer(nil, Host{}), ForServer(nil, Host{Spans: true}), ForRelays()} {
		reg, err := newRegistry(Health{Role: "test", Version: "test"}, c)
		if err != nil {
			t.Fatal(err)
		}
		ch := make(chan *prometheus.Desc)
		go func() { reg.Describe(ch); close(ch) }()
		for d := range ch {
			m := descRE.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("a description this test cannot read (client_golang's Desc.String changed?): %s", d)
			}
			ls := map[string]bool{}
			for _, l := range targetLabels {
				ls[l] = true
			}
			for _, l := range constRE.FindAllStringSubmatch(m[3], -1) {
				ls[l[1]] = true
			}
			for _, l := range strings.Split(m[4], ",") {
				if l != "" {
					ls[strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")")] = true
				}
			}
			out[m[1]] = servedMetric{ls, m[2]}
		}
	}
	// A histogram's or summary's series carry suffixes its description
	// does not (the Go runtime's go_gc_duration_seconds).
	for name, ls := range out {
		for _, suffix := range []string{"_sum", "_count", "_bucket"} {
			if _, ok := out[name+suffix]; !ok {
				out[name+suffix] = ls
			}
		}
	}
	for _, name := range []string{"katatrace_sink_up", "katatrace_agent_connections", "katatrace_relay_connected", "katatrace_host_listeners", "process_resident_memory_bytes"} {
		if out[name].labels == nil {
			t.Fatalf("%s not among the descriptions read: the test reads the wrong collectors", name)
		}
	}
	return out
}

// grafanaVars are Grafana's interval variables, which PromQL cannot parse
// in a range; the dashboard's own ($instance, $sandbox) stand in strings.
var grafanaVars = regexp.MustCompile(`\$__(rate_interval|interval|range)|\$\{__(rate_interval|interval|range)\}`)

// unserved says what expr names that no role serves: a metric, a
// metric regular expression matching none, a label the metric lacks (in a
// selector, or in by, without, on, ignoring, group_left/right: Prometheus
// takes any name there, and an aggregation by a label no series has
// merges what it was meant to keep apart), or a reason the metric's help
// does not name (the values the code emits).
func unserved(expr string, metrics map[string]servedMetric) ([]string, error) {
	e, err := parser.ParseExpr(grafanaVars.ReplaceAllString(expr, "5m"))
	if err != nil {
		return nil, err
	}
	var bad []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			bad = append(bad, unservedSelector(n, metrics)...)
		case *parser.AggregateExpr:
			has := resultLabels(n.Expr, metrics)
			for _, l := range n.Grouping {
				if !has[l] {
					bad = append(bad, fmt.Sprintf("%s: no series aggregated has label %q", n, l))
				}
			}
		case *parser.BinaryExpr:
			vm := n.VectorMatching
			if vm == nil || n.LHS.Type() != parser.ValueTypeVector || n.RHS.Type() != parser.ValueTypeVector {
				return nil
			}
			lhs, rhs := resultLabels(n.LHS, metrics), resultLabels(n.RHS, metrics)
			for _, l := range vm.MatchingLabels {
				if vm.On && !(lhs[l] && rhs[l]) || !vm.On && !lhs[l] && !rhs[l] {
					bad = append(bad, fmt.Sprintf("%s: label %q matched on is not on both sides", n, l))
				}
			}
			one := rhs // group_left's labels come from the right
			if vm.Card == parser.CardOneToMany {
				one = lhs
			}
			for _, l := range vm.Include {
				if !one[l] {
					bad = append(bad, fmt.Sprintf("%s: label %q to copy is not on the one side", n, l))
				}
			}
		}
		return nil
	})
	return bad, nil
}

// unservedSelector: a selector's metric names, labels and reasons.
func unservedSelector(vs *parser.VectorSelector, metrics map[string]servedMetric) []string {
	var bad, names []string
	for _, m := range vs.LabelMatchers {
		if m.Name != labels.MetricName {
			continue
		}
		for name := range metrics {
			if m.Matches(name) {
				names = append(names, name)
			}
		}
		if len(names) == 0 {
			bad = append(bad, fmt.Sprintf("%s: no metric served matches %s", vs, m))
		}
	}
	reasonWord := regexp.MustCompile(`[a-z_]+`)
	for _, name := range names {
		for _, m := range vs.LabelMatchers {
			switch {
			case m.Name == labels.MetricName:
			case !metrics[name].labels[m.Name]:
				bad = append(bad, fmt.Sprintf("%s: %s has no label %q", vs, name, m.Name))
			case m.Name == "reason" && (m.Type == labels.MatchEqual || m.Type == labels.MatchRegexp):
				// A value or a regexp's alternatives (a|b|c): each a
				// word of the metric's help, which lists its reasons.
				for _, v := range strings.Split(m.Value, "|") {
					if !reasonWord.MatchString(v) || !regexp.MustCompile(`\b`+regexp.QuoteMeta(v)+`\b`).MatchString(metrics[name].help) {
						bad = append(bad, fmt.Sprintf("%s: %s has no reason %q", vs, name, v))
					}
				}
			}
		}
	}
	return bad
}

// resultLabels are the labels expr's series can carry: what its selectors'
// metrics have, less what aggregations and one-to-one matching on() drop.
func resultLabels(expr parser.Expr, metrics map[string]servedMetric) map[string]bool {
	out := map[string]bool{}
	add := func(ls map[string]bool) {
		for l := range ls {
			out[l] = true
		}
	}
	switch e := expr.(type) {
	case *parser.VectorSelector:
		for _, m := range e.LabelMatchers {
			if m.Name != labels.MetricName {
				continue
			}
			for name, sm := range metrics {
				if m.Matches(name) {
					add(sm.labels)
				}
			}
		}
	case *parser.MatrixSelector:
		return resultLabels(e.VectorSelector, metrics)
	case *parser.ParenExpr:
		return resultLabels(e.Expr, metrics)
	case *parser.SubqueryExpr:
		return resultLabels(e.Expr, metrics)
	case *parser.StepInvariantExpr:
		return resultLabels(e.Expr, metrics)
	case *parser.Call:
		for _, a := range e.Args {
			if t := a.Type(); t == parser.ValueTypeVector || t == parser.ValueTypeMatrix {
				add(resultLabels(a, metrics))
			}
		}
		if (e.Func.Name == "label_replace" || e.Func.Name == "label_join") && len(e.Args) > 1 {
			if dst, ok := e.Args[1].(*parser.StringLiteral); ok {
				out[dst.Val] = true
			}
		}
	case *parser.AggregateExpr:
		if !e.Without {
			for _, l := range e.Grouping {
				out[l] = true
			}
			return out
		}
		add(resultLabels(e.Expr, metrics))
		for _, l := range e.Grouping {
			delete(out, l)
		}
	case *parser.BinaryExpr:
		lhs, rhs := resultLabels(e.LHS, metrics), resultLabels(e.RHS, metrics)
		vm := e.VectorMatching
		switch {
		case e.LHS.Type() != parser.ValueTypeVector:
			return rhs
		case e.RHS.Type() != parser.ValueTypeVector || vm == nil:
			return lhs
		case e.Op == parser.LOR:
			add(lhs)
			add(rhs)
		case e.Op == parser.LAND || e.Op == parser.LUNLESS:
			return lhs
		case vm.Card == parser.CardOneToOne && vm.On:
			for _, l := range vm.MatchingLabels {
				out[l] = lhs[l]
			}
		default:
			add(lhs)
			if vm.Card == parser.CardOneToMany {
				out = rhs
			}
			for _, l := range vm.Include {
				out[l] = true
			}
		}
	}
	return out
}

// rule is one rule of a Prometheus rule file.
type rule struct {
	Alert, Record, Expr, For string
	KeepFiringFor            string `yaml:"keep_firing_for"`
	Labels, Annotations      map[string]string
}

// rules are a Prometheus rule file's rules, each with a name and an
// expression.
func rules(t *testing.T, b []byte) []rule {
	t.Helper()
	// Prometheus's rule file format (rulefmt), whole: strict decoding
	// refuses a field misspelt (exprr:), which would hide its expression.
	var f struct {
		Groups []struct {
			Name, Interval string
			QueryOffset    string `yaml:"query_offset"`
			Limit          int
			Labels         map[string]string
			Rules          []rule
		}
	}
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatalf("rule file: %v", err)
	}
	var out []rule
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert+r.Record == "" || r.Expr == "" {
				t.Fatalf("rule file: a rule without a name or an expression: %+v", r)
			}
			out = append(out, r)
		}
	}
	return out
}

// shippedRules are the shipped alert rules.
func shippedRules(t *testing.T) []rule {
	t.Helper()
	b, err := os.ReadFile(alertRules)
	if err != nil {
		t.Fatal(err)
	}
	return rules(t, b)
}

// ruleExprs are the expressions of a Prometheus rule file, by rule name;
// an alert of two rules (one per severity) gives both, the second's name
// numbered.
func ruleExprs(t *testing.T, b []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, r := range rules(t, b) {
		name := r.Alert + r.Record
		for i := 2; out[name] != ""; i++ {
			name = fmt.Sprintf("%s#%d", r.Alert+r.Record, i)
		}
		out[name] = r.Expr
	}
	return out
}

// dashboardExprs are a Grafana dashboard's queries: every panel's
// targets' expr, and its variables' label_values(...) or query_result(...)
// queries.
func dashboardExprs(t *testing.T, b []byte) map[string]string {
	t.Helper()
	var d any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	out := map[string]string{}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if e, ok := v["expr"].(string); ok {
				out[path+".expr"] = e
			}
			for k, x := range v {
				walk(path+"."+k, x)
			}
		case []any:
			for i, x := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), x)
			}
		}
	}
	walk("", d)
	vars, _ := d.(map[string]any)["templating"].(map[string]any)["list"].([]any)
	varQuery := regexp.MustCompile(`^(?:label_values\((.+),\s*[a-zA-Z_][a-zA-Z0-9_]*\)|query_result\((.+)\))$`)
	for _, v := range vars {
		v := v.(map[string]any)
		if v["type"] != "query" {
			continue
		}
		q, _ := v["query"].(string)
		if m, ok := v["query"].(map[string]any); ok {
			q, _ = m["query"].(string)
		}
		m := varQuery.FindStringSubmatch(q)
		if m == nil {
			t.Fatalf("dashboard: variable %v: query %q is neither label_values(EXPR, LABEL) nor query_result(EXPR)", v["name"], q)
		}
		out[fmt.Sprintf("variable %v", v["name"])] = m[1] + m[2]
	}
	return out
}

func TestDeployNamesServedMetrics(t *testing.T) {
	metrics := served(t)
	for _, file := range []string{alertRules, dashboard} {
		t.Run(file, func(t *testing.T) {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			exprs := dashboardExprs
			if strings.HasSuffix(file, ".yaml") {
				exprs = ruleExprs
			}
			es := exprs(t, b)
			if len(es) < 5 {
				t.Fatalf("%d expressions read: the file's layout is not what this test reads", len(es))
			}
			for where, e := range es {
				bad, err := unserved(e, metrics)
				if err != nil {
					t.Errorf("%s: %q: %v", where, e, err)
				}
				for _, b := range bad {
					t.Errorf("%s: %s", where, b)
				}
			}
		})
	}
}

// TestUnservedFound: what the check above must catch, it catches.
func TestUnservedFound(t *testing.T) {
	metrics := served(t)
	for _, tc := range []struct{ name, expr, want string }{
		{"a misspelt metric", `katatrace_sink_upp == 0`, "katatrace_sink_upp"},
		{"a metric of no role", `increase(katatrace_agent_datagrams_total[5m]) > 0 or katatrace_sink_up == 0`, "katatrace_agent_datagrams_total"},
		{"a label the metric lacks", `katatrace_sink_up{guest="x"} == 0`, `has no label "guest"`},
		{"a name pattern matching none", `{__name__=~"katatrace_vm_.*"}`, "no metric served matches"},
		{"a Grafana query on a wrong name", `sum by (sandbox) (rate(katatrace_agent_span_total{instance=~"$instance"}[$__rate_interval]))`, "katatrace_agent_span_total"},
		{"by a label no series has", `sum by (instance, guest) (katatrace_sink_up)`, `no series aggregated has label "guest"`},
		{"without a label no series has", `sum without (sandbox) (katatrace_sink_up)`, `no series aggregated has label "sandbox"`},
		{"on a label one side lacks", `katatrace_sink_up == 0 and on (sink, guest) katatrace_agent_connections > 0`, `label "sink" matched on is not on both sides`},
		{"group_left a label the one side lacks", `katatrace_agent_connections * on (instance) group_left (sink) katatrace_host_listeners`, `label "sink" to copy is not on the one side`},
		{"a reason never emitted", `katatrace_host_dropped_datagrams_total{reason="sink_full"}`, `has no reason "sink_full"`},
		{"a reason among others never emitted", `katatrace_forwarder_dropped_spans_total{reason=~"sink_refused|sink_lose"}`, `has no reason "sink_lose"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad, err := unserved(tc.expr, metrics)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(bad, func(s string) bool { return strings.Contains(s, tc.want) }) {
				t.Fatalf("%q: found %q, want one naming %s", tc.expr, bad, tc.want)
			}
		})
	}
	for _, ok := range []string{`katatrace_sink_up{sink="x",instance="n:9464"} == 0`, `go_gc_duration_seconds_count`, `{__name__=~"katatrace_(agent|guest)_connections"}`,
		`sum by (instance, sink) (katatrace_sink_up) == 0 and on (instance, sink) katatrace_sink_queue_batches > 0`,
		`katatrace_agent_connections * on (instance) group_left (version) katatrace_build_info`,
		`katatrace_forwarder_dropped_spans_total{reason=~"sink_refused|sink_dropped"}`} {
		if bad, err := unserved(ok, metrics); err != nil || len(bad) > 0 {
			t.Errorf("%q: %v %q, want nothing", ok, err, bad)
		}
	}
}

// TestAlertsKeepTargetLabels: every alert's series carry the target's
// labels, so that under Kubernetes an alert says which node and pod: an
// aggregation by (instance, job) would drop namespace, pod and node.
func TestAlertsKeepTargetLabels(t *testing.T) {
	metrics := served(t)
	for _, r := range shippedRules(t) {
		e, err := parser.ParseExpr(r.Expr)
		if err != nil {
			t.Fatalf("%s: %v", r.Alert, err)
		}
		has := resultLabels(e, metrics)
		for _, l := range targetLabels {
			if !has[l] {
				t.Errorf("%s drops the target label %q: %s", r.Alert, l, r.Expr)
			}
		}
	}
}

// TestRunbooksQuoteTheGuide: every phrase a runbook quotes ('...') is in
// docs/guide.md as written, so an operator's search finds it; a phrase
// with … in it is its parts, each found.
func TestRunbooksQuoteTheGuide(t *testing.T) {
	guide, err := os.ReadFile("../docs/guide.md")
	if err != nil {
		t.Fatal(err)
	}
	// An apostrophe (the endpoint's) is between letters; a quote is not.
	apostrophe := regexp.MustCompile(`(\pL)'(\pL)`)
	quoted := regexp.MustCompile(`'([^']+)'`)
	for _, r := range shippedRules(t) {
		rb := apostrophe.ReplaceAllString(r.Annotations["runbook"], "$1’$2")
		if !strings.Contains(rb, "docs/guide.md") {
			t.Errorf("%s: runbook names no section of docs/guide.md: %q", r.Alert, rb)
			continue
		}
		for _, m := range quoted.FindAllStringSubmatch(rb, -1) {
			for part := range strings.SplitSeq(strings.ReplaceAll(m[1], "’", "'"), "…") {
				if p := strings.TrimSpace(part); !strings.Contains(string(guide), p) {
					t.Errorf("%s: runbook quotes %q, which docs/guide.md does not contain", r.Alert, p)
				}
			}
		}
	}
}

// TestAnnotationsNameTheirSeriesLabels: every $labels.X an alert's
// summary, description or runbook writes is a label its expression's
// series carry; one dropped by an aggregation renders empty.
func TestAnnotationsNameTheirSeriesLabels(t *testing.T) {
	metrics := served(t)
	ref := regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)
	n := 0
	for _, r := range shippedRules(t) {
		e, err := parser.ParseExpr(r.Expr)
		if err != nil {
			t.Fatalf("%s: %v", r.Alert, err)
		}
		has := resultLabels(e, metrics)
		for k, a := range r.Annotations {
			for _, m := range ref.FindAllStringSubmatch(a, -1) {
				n++
				if !has[m[1]] {
					t.Errorf("%s: %s writes $labels.%s, which its series do not carry (they carry %v)", r.Alert, k, m[1], slices.Sorted(maps.Keys(has)))
				}
			}
		}
	}
	if n < 10 {
		t.Fatalf("%d $labels references read: the file's layout is not what this test reads", n)
	}
}
