// Command katatrace-bench measures, in one run, the same UDP workloads through
// three paths and prints one table:
//
//  1. baseline: sender → sink directly (the machine's limit);
//  2. socat: guest socat -u UDP-RECV → UNIX-CONNECT, host socat -u
//     UNIX-LISTEN,fork → UDP-SENDTO, as Kata used them;
//  3. katatrace: guest relay → unix socket → host relay.
//
// For each path, workload and offered load: datagrams/s and MB/s delivered,
// datagrams intact (byte-equal), lost and corrupted, CPU seconds of the
// relay processes per 100,000 datagrams, p50/p99 latency (and what the path
// adds to the baseline's), and the relays' peak RSS. --scale runs the host
// relay with 1,000 concurrent guest connections instead.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

type config struct {
	bin, socat string
	senders    []string
	paths      []string
	hostFlags  []string // more flags for the host relay
	step       time.Duration
	rates      []int
	workloads  []string
}

// Result is one row of the table.
type Result struct {
	Path        string  `json:"path"`
	Sender      string  `json:"sender"`
	Workload    string  `json:"workload"`
	Offered     int     `json:"offered_per_s"` // 0: as fast as the sender can
	Sent        int     `json:"sent"`
	SentRate    float64 `json:"sent_per_s"`
	Intact      int     `json:"intact"`
	Lost        int     `json:"lost"`
	Corrupted   int     `json:"corrupted"`
	Rate        float64 `json:"delivered_per_s"`
	MBps        float64 `json:"delivered_mb_per_s"`
	CPUPer100k  float64 `json:"cpu_s_per_100k"`
	P50, P99    float64 `json:"-"`
	P50us       float64 `json:"latency_p50_us"`
	P99us       float64 `json:"latency_p99_us"`
	AddedP50us  float64 `json:"added_latency_p50_us"`
	AddedP99us  float64 `json:"added_latency_p99_us"`
	PeakRSSKiB  []int   `json:"relay_peak_rss_kib"`
	RelayLabels []string
}

func main() {
	var cfg config
	var rates, workloads, plot, hostFlags, senders, paths, limitGuestArgs, limitHostArgs string
	var asJSON, scale, kata3 bool
	var jaegerBin string
	var kata3Spans int
	flag.StringVar(&cfg.bin, "bin", "bin/katatrace", "the katatrace binary")
	flag.StringVar(&cfg.socat, "socat", "", "socat (default: from PATH; the socat path is skipped without it)")
	flag.DurationVar(&cfg.step, "step", 2*time.Second, "how long each offered load is sent")
	flag.StringVar(&rates, "rates", "20000,50000,100000,200000,0", "offered loads in datagrams/s; 0 means as fast as the sender can (saturation)")
	flag.StringVar(&workloads, "workloads", "64,1k,8k,60k,jaeger", "workloads: datagram sizes (64, 1k, 8k, 60k) and jaeger, a Jaeger-like mix")
	flag.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	flag.StringVar(&plot, "plot", "", "draw delivered vs offered load per path to this PNG file")
	flag.BoolVar(&scale, "scale", false, "instead: host relay with 1,000 guest connections at 100 datagrams/s each")
	flag.BoolVar(&kata3, "kata3", false, "instead: Kata 3.x spans through kata-trace-forwarder into Jaeger's OTLP receiver beside the Kata 1.x path into its UDP port, and the forwarder with 1,000 guests (needs --jaeger)")
	flag.StringVar(&jaegerBin, "jaeger", "bin/jaeger", "with --kata3: the Jaeger v2 binary")
	flag.IntVar(&kata3Spans, "kata3-spans", 100000, "with --kata3: spans per path")
	flag.StringVar(&hostFlags, "host-flags", "", "more flags for katatrace's host relay, space-separated (e.g. --guest-rate=0); with --kata3, for both sinks' roles in its run against a collector 50 ms away (e.g. --collector-workers=2)")
	flag.StringVar(&paths, "paths", "baseline,limit,socat,katatrace", "paths: baseline (direct UDP), limit (the minimal framed pair), socat, katatrace")
	flag.StringVar(&senders, "senders", "batched,plain", "senders: batched (64 datagrams per sendmmsg) and plain (one write per datagram, as jaeger-client-go)")
	flag.StringVar(&limitGuestArgs, "limit-guest", "", "(internal) run as the minimal pair's guest: UDP address, then (next argument) socket")
	flag.StringVar(&limitHostArgs, "limit-host", "", "(internal) run as the minimal pair's host: socket, then (next argument) UDP address")
	var hostile bool
	var hostileGuests, hostileConns, hostileSpans int
	var baselineBin, hostileGuestSock string
	flag.BoolVar(&hostile, "hostile", false, "instead: kata-trace-forwarder's memory while hostile guests (processes of their own) hold connections inside 4 MiB spans they never finish, and a good agent's spans beside them")
	flag.IntVar(&hostileGuests, "hostile-guests", 10, "with --hostile: guests")
	flag.IntVar(&hostileConns, "hostile-connections", 64, "with --hostile: connections per guest")
	flag.IntVar(&hostileSpans, "hostile-spans", 1000, "with --hostile: the good agent's spans")
	flag.StringVar(&baselineBin, "baseline-bin", "", "with --hostile: an earlier katatrace build, measured in the same run")
	flag.StringVar(&hostileGuestSock, "hostile-guest", "", "(internal) run as a hostile guest: socket, then (next argument) connections")
	flag.Parse()
	switch {
	case hostileGuestSock != "":
		n, err := strconv.Atoi(flag.Arg(0))
		if err != nil || n < 1 {
			fatalf("hostile guest: %q is not a number of connections", flag.Arg(0))
		}
		fatalf("hostile guest: %v", hostileGuest(hostileGuestSock, n))
	case hostile:
		if hostileGuests < 1 || hostileConns < 1 || hostileSpans < 1 {
			fatalf("--hostile-guests, --hostile-connections and --hostile-spans: give 1 or more")
		}
		if err := runHostile(cfg.bin, baselineBin, hostileGuests, hostileConns, hostileSpans); err != nil {
			fatalf("hostile: %v", err)
		}
		return
	case limitGuestArgs != "":
		fatalf("limit guest: %v", limitGuest(limitGuestArgs, flag.Arg(0)))
	case limitHostArgs != "":
		fatalf("limit host: %v", limitHost(limitHostArgs, flag.Arg(0)))
	case kata3:
		if kata3Spans < 2 {
			fatalf("--kata3-spans: %d: give 2 or more", kata3Spans)
		}
		if err := runKata3(cfg.bin, jaegerBin, kata3Spans, strings.Fields(hostFlags)); err != nil {
			fatalf("kata3: %v", err)
		}
		return
	}
	cfg.senders = strings.Split(senders, ",")
	cfg.paths = strings.Split(paths, ",")
	for _, p := range cfg.paths {
		if !slices.Contains([]string{"baseline", "limit", "socat", "katatrace"}, p) {
			fatalf("--paths: unknown path %q (want baseline, limit, socat or katatrace)", p)
		}
	}
	for _, s := range cfg.senders {
		if s != "batched" && s != "plain" {
			fatalf("--senders: unknown sender %q (want batched or plain)", s)
		}
	}
	cfg.hostFlags = strings.Fields(hostFlags)
	for _, r := range strings.Split(rates, ",") {
		var n int
		if _, err := fmt.Sscan(r, &n); err != nil || n < 0 {
			fatalf("--rates: %q is not a rate", r)
		}
		cfg.rates = append(cfg.rates, n)
	}
	cfg.workloads = strings.Split(workloads, ",")
	for _, w := range cfg.workloads {
		if _, ok := workloadSizes[w]; !ok {
			fatalf("--workloads: unknown workload %q (want 64, 1k, 8k, 60k or jaeger)", w)
		}
	}
	if _, err := os.Stat(cfg.bin); err != nil {
		fatalf("--bin: %v (run make build)", err)
	}
	if cfg.socat == "" {
		cfg.socat, _ = exec.LookPath("socat")
	}
	if scale {
		if err := runScale(cfg.bin, cfg.hostFlags); err != nil {
			fatalf("%v", err)
		}
		return
	}
	results, err := runAll(cfg)
	if err != nil {
		fatalf("%v", err)
	}
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(results)
	} else {
		printTable(results)
	}
	if plot != "" {
		if err := drawPlot(plot, results); err != nil {
			fatalf("--plot: %v", err)
		}
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "katatrace-bench: "+format+"\n", args...)
	os.Exit(1)
}

func runAll(cfg config) ([]Result, error) {
	var results []Result
	paths := cfg.paths
	if cfg.socat == "" && slices.Contains(paths, "socat") {
		fmt.Fprintln(os.Stderr, "katatrace-bench: socat not found: the socat path is skipped")
		paths = slices.DeleteFunc(slices.Clone(paths), func(p string) bool { return p == "socat" })
	}
	for _, path := range paths {
		p, err := startPath(path, cfg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		for _, sender := range cfg.senders {
			for _, w := range cfg.workloads {
				for _, rate := range cfg.rates {
					r := p.run(w, sender, rate, cfg.step)
					fmt.Fprintf(os.Stderr, "%-10s %-7s %-7s offered %-8s delivered %9.0f/s intact %d/%d\n",
						path, sender, w, offered(rate), r.Rate, r.Intact, r.Sent)
					results = append(results, r)
				}
			}
		}
		p.stop()
	}
	// What each path adds to the baseline's latency, at the same load.
	for i := range results {
		for _, b := range results {
			if b.Path == "baseline" && b.Sender == results[i].Sender && b.Workload == results[i].Workload && b.Offered == results[i].Offered {
				results[i].AddedP50us = results[i].P50us - b.P50us
				results[i].AddedP99us = results[i].P99us - b.P99us
			}
		}
	}
	return results, nil
}

func offered(rate int) string {
	if rate == 0 {
		return "max"
	}
	return fmt.Sprint(rate)
}

func printTable(results []Result) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "path\tsender\tworkload\toffered/s\tdelivered/s\tMB/s\tintact\tlost\tcorrupt\tCPU s/100k\tp50 µs\tp99 µs\t+p50 µs\t+p99 µs\tpeak RSS KiB\t")
	for _, r := range results {
		rss := make([]string, len(r.PeakRSSKiB))
		for i, k := range r.PeakRSSKiB {
			rss[i] = fmt.Sprintf("%s %d", r.RelayLabels[i], k)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%.0f\t%.1f\t%d\t%d\t%d\t%.2f\t%.0f\t%.0f\t%.0f\t%.0f\t%s\t\n", r.Path, r.Sender, r.Workload,
			offered(r.Offered), r.Rate, r.MBps, r.Intact, r.Lost, r.Corrupted, r.CPUPer100k, r.P50us, r.P99us,
			r.AddedP50us, r.AddedP99us, strings.Join(rss, ", "))
	}
	w.Flush()
	fmt.Println("\nratios at saturation (offered max), delivered datagrams/s; collapse: delivered at the highest load over the best of any load")
	for _, sender := range uniq(results, func(r Result) string { return r.Sender }) {
		for _, wl := range uniq(results, func(r Result) string { return r.Workload }) {
			get := func(path string) float64 {
				for _, r := range results {
					if r.Path == path && r.Sender == sender && r.Workload == wl && r.Offered == 0 {
						return r.Rate
					}
				}
				return 0
			}
			best := 0.0
			for _, r := range results {
				if r.Path == "katatrace" && r.Sender == sender && r.Workload == wl {
					best = max(best, r.Rate)
				}
			}
			k, s, b, l := get("katatrace"), get("socat"), get("baseline"), get("limit")
			line := fmt.Sprintf("  %-7s %-7s katatrace/limit %.2f  katatrace/baseline %.2f  at max/best %.2f", sender, wl, k/l, k/b, k/best)
			if s > 0 {
				line += fmt.Sprintf("  katatrace/socat %.2f", k/s)
			} else if slices.ContainsFunc(results, func(r Result) bool { return r.Path == "socat" }) {
				line += "  katatrace/socat ∞ (socat delivered nothing intact)"
			}
			fmt.Println(line)
		}
	}
}

func uniq(rs []Result, key func(Result) string) []string {
	var out []string
	for _, r := range rs {
		if k := key(r); !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}
