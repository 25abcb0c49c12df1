package roles

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/alecthomas/kong"
	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/systemd"
)

// Exit codes of Main.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2 // bad flags, arguments or addresses; unknown name
)

// ExitError makes Main exit with Code; a role uses it to pass on the exit
// status of what it supervised. Err, if set, is logged.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err != nil {
		return e.Err.Error()
	}
	return fmt.Sprintf("exit status %d", e.Code)
}

// Globals are the flags of every role. -l, trace and critical, -V and -v
// are those of Kata's kata-trace-forwarder (clap's -V from 3.19, its
// version_short("v") before), so that its command lines work here.
type Globals struct {
	LogLevel  string           `short:"l" help:"Log level: trace, debug, info, warn, error or critical. Kata's trace is below debug and critical above error; katatrace logs nothing at either, so trace logs what debug does and critical nothing (the exit status still tells a failure)." enum:"trace,debug,info,warn,error,critical" default:"info"`
	LogFormat string           `help:"Log format: text or json (to stderr)." enum:"text,json" default:"text"`
	Version   kong.VersionFlag `short:"V" aliases:"v" help:"Print the version and exit (-v too, as Kata's before 3.19)." env:"-"`
}

// logLevels are the slog levels of --log-level's names: Kata's trace
// below debug, critical above error (slog's own steps of 4).
var logLevels = map[string]slog.Level{
	"trace": slog.LevelDebug - 4, "debug": slog.LevelDebug, "info": slog.LevelInfo,
	"warn": slog.LevelWarn, "error": slog.LevelError, "critical": slog.LevelError + 4,
}

// Options are Main's connections to the outside, replaceable in tests.
type Options struct {
	Version        string
	Stdout, Stderr io.Writer
	// Ctx, when set, replaces the context that SIGTERM and SIGINT cancel;
	// Reload, when set, replaces SIGHUP.
	Ctx    context.Context
	Reload <-chan struct{}
}

// exitPanic carries kong's exit (after --help, --version, or a parse error)
// out of the parser, so Main returns an exit code instead of exiting.
type exitPanic int

// BinaryName is the name that takes roles as subcommands.
const BinaryName = "katatrace"

// Main runs katatrace as called with args (args[0] included) and returns the
// exit code. Called by a role's name (a symlink), it runs that role with the
// role's flags at the top level; called as katatrace, roles are
// subcommands, beside "links", "reload", "seccomp-profile" and "version".
func Main(args []string, o Options) (code int) {
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	defer func() {
		if r := recover(); r != nil {
			c, ok := r.(exitPanic)
			if !ok {
				panic(r)
			}
			code = int(c)
		}
	}()
	name := filepath.Base(args[0])
	if role, ok := Lookup(name); ok {
		return runRole(role, args[1:], o)
	}
	if name == BinaryName {
		return runMulti(args[1:], o)
	}
	fmt.Fprintf(o.Stderr, "%s: unknown role %q: call this binary as %s ROLE, or through a symlink named after a role:\n%s",
		BinaryName, name, BinaryName, roleList())
	return ExitUsage
}

func roleList() string {
	var b strings.Builder
	for _, r := range All() {
		fmt.Fprintf(&b, "  %-32s %s\n", r.Name, r.Help)
	}
	return b.String()
}

func kongOptions(o Options, name, help string) []kong.Option {
	return []kong.Option{
		kong.Name(name),
		kong.Description(help),
		kong.Writers(o.Stdout, o.Stderr),
		kong.Exit(func(c int) { panic(exitPanic(c)) }),
		kong.Vars{"version": name + " " + o.Version, "to_host_help": toHostHelp, "from_guest_help": fromGuestHelp, "otel_help": otelHelp},
		kong.DefaultEnvars("KATATRACE"),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Help(flagsFirstHelp),
	}
}

func runRole(role Role, args []string, o Options) int {
	// The role is the root of the grammar (so its positional arguments are
	// the root's) and the global flags are embedded in it.
	var g Globals
	parser, err := kong.New(role.New(), append(kongOptions(o, role.Name, role.Help), kong.Embed(&g))...)
	if err != nil {
		panic(err) // a bad struct tag: a bug, caught by tests
	}
	kctx, err := parser.Parse(args) // runs the roles' Validate too
	if err != nil {
		return usageError(parser, err, args)
	}
	return run(role.Name, kctx, g, o)
}

// multi is the command line of the katatrace binary itself.
type multi struct {
	Globals
	Links       linksCmd          `cmd:"" help:"Create a symlink for every role in DIR (idempotent)."`
	Reload      reloadCmd         `cmd:"" help:"Ask a running role to reload (SIGHUP), as the units' ExecReload= does: katatrace reload $MAINPID."`
	Seccomp     seccompProfileCmd `cmd:"" name:"seccomp-profile" help:"Print the seccomp profile the host roles need in a container (the runtime's default plus socket(AF_VSOCK)), or install it with --write (the Helm chart's init container does, into the kubelet's seccomp directory)."`
	VersionInfo versionCmd        `cmd:"" name:"version" help:"Print the version."`
}

func runMulti(args []string, o Options) int {
	var cli multi
	opts := kongOptions(o, BinaryName, "Carries Kata Containers agent traces from a VM guest to Jaeger on the host. "+
		"Run a role as a subcommand, or through a symlink named after it (see 'katatrace links').")
	for _, r := range All() {
		opts = append(opts, kong.DynamicCommand(r.Name, r.Help, "Roles", r.New()))
	}
	parser, err := kong.New(&cli, opts...)
	if err != nil {
		panic(err)
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		return usageError(parser, err, args)
	}
	return run(kctx.Selected().Name, kctx, cli.Globals, o)
}

// flagError is a validation error about one flag. Where the value came
// from its environment twin rather than the command line, the message says
// so: usageError knows the arguments and fills in env.
type flagError struct {
	flag string
	err  error
	env  string
}

func (e *flagError) Error() string {
	if e.env != "" {
		return fmt.Sprintf("--%s (from $%s): %v", e.flag, e.env, e.err)
	}
	return fmt.Sprintf("--%s: %v", e.flag, e.err)
}

func (e *flagError) Unwrap() error { return e.err }

// flagErr names the flag a validation error is about.
func flagErr(flag string, err error) error { return &flagError{flag: flag, err: err} }

// usageArgsRE is kong's usage line for a role that takes a command: it
// puts the arguments before "[flags]", the reverse of how they are given.
var usageArgsRE = lazyRegexp(`(?m)^(Usage: .*?)(\[<\w+> \.\.\.\]) \[flags\]$`)

// lazyRegexp compiles expr at its first use: the expressions here serve
// help and errors, not every role's start.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}

// flagsFirstHelp is kong's help with the usage line in the real order:
// kata-agent-tracer [flags] [--] AGENT ARGS.
func flagsFirstHelp(options kong.HelpOptions, ctx *kong.Context) error {
	var b strings.Builder
	out := ctx.Stdout
	ctx.Stdout = &b
	err := kong.DefaultHelpPrinter(options, ctx)
	ctx.Stdout = out
	_, werr := io.WriteString(out, usageArgsRE().ReplaceAllString(b.String(), "${1}[flags] [--] ${2}"))
	return errors.Join(err, werr)
}

var shortFlagRE = lazyRegexp(`^(--[\w-]+): expected .* but got "(-[^"]*)" \(short flag\)`)

func usageError(parser *kong.Kong, err error, args []string) int {
	var fe *flagError
	if errors.As(err, &fe) {
		env := "KATATRACE_" + strings.ToUpper(strings.ReplaceAll(fe.flag, "-", "_"))
		if _, set := os.LookupEnv(env); set && !slices.ContainsFunc(args, func(a string) bool {
			return a == "--"+fe.flag || strings.HasPrefix(a, "--"+fe.flag+"=")
		}) {
			fe.env = env
		}
	}
	msg := fixAddrExample(err, fe)
	if m := shortFlagRE().FindStringSubmatch(msg); m != nil {
		// kong reads a value starting with "-" as a flag.
		msg = fmt.Sprintf("%s needs a value: %q is not one (sizes and durations are positive)", m[1], m[2])
	}
	parser.Errorf("%s", msg)
	fmt.Fprintf(parser.Stderr, "Run '%s --help' for usage.\n", helpOf(parser, err))
	return ExitUsage
}

// helpOf is the command whose help answers a usage error: the role's
// (katatrace ROLE, or a subcommand's) once the parser got that far, not
// the binary's list of roles.
func helpOf(parser *kong.Kong, err error) string {
	var pe *kong.ParseError
	if errors.As(err, &pe) && pe.Context != nil {
		if n := pe.Context.Selected(); n != nil && n.Type == kong.CommandNode {
			return parser.Model.Name + " " + n.Name
		}
	}
	return parser.Model.Name
}

var flagNameRE = lazyRegexp(`^--([\w-]+)`)

// fixAddrExample makes an address error's example and scheme list those
// of its flag (the flag's addr tag: "listen" or "dial", then its schemes;
// addrexample, an example of its first scheme):
// a host relay's --from listens, so its vsock example is vsock://any:PORT,
// never a guest's vsock://2:PORT, and --metrics-listen lists only the
// schemes it takes. PORT is the role's (flagPort): the forwarder's 10240,
// the journal's 5140. It returns err's message, so fixed.
func fixAddrExample(err error, fe *flagError) string {
	msg := err.Error()
	var ae *endpoint.AddrError
	var pe *kong.ParseError
	if !errors.As(err, &ae) || !errors.As(err, &pe) || pe.Context == nil {
		return msg
	}
	name := ""
	if fe != nil {
		name = fe.flag
	} else if m := flagNameRE().FindStringSubmatch(err.Error()); m != nil {
		name = m[1]
	}
	var tag []string
	var example string
	port := uint32(6831)
	for _, f := range pe.Context.Flags() {
		if f.Name == name {
			tag, example = strings.Fields(f.Tag.Get("addr")), f.Tag.Get("addrexample")
			if p, ok := flagPort(f); ok {
				port = p
			}
		}
	}
	if len(tag) < 2 {
		return msg
	}
	was := ae.Error() // the wrapping errors' messages hold it as it was
	listen, schemes := tag[0] == "listen", tag[1:]
	scheme := ae.Scheme
	if !slices.Contains(schemes, scheme) {
		scheme = schemes[0]
	}
	switch {
	case example != "" && scheme == schemes[0]:
		ae.Example = example // the flag's own (addrexample)
	default:
		ae.Example = endpoint.PortExample(scheme, listen, port)
	}
	if ae.Scheme == "" { // missing or unknown: say which this flag takes
		what, _, _ := strings.Cut(ae.Reason, ": want")
		ae.Reason = what + ": want " + endpoint.SchemeList(schemes...)
	}
	return strings.Replace(msg, was, ae.Error(), 1)
}

// flagPort is the port of an address flag's examples: its addrport tag
// (the forwarder's --from has no default), else its default's port.
func flagPort(f *kong.Flag) (uint32, bool) {
	if p := f.Tag.Get("addrport"); p != "" {
		n, err := strconv.ParseUint(p, 10, 32)
		return uint32(n), err == nil
	}
	a, err := endpoint.ParseAddr(f.Default)
	if err != nil {
		return 0, false
	}
	switch a.Scheme {
	case endpoint.SchemeVsock:
		return a.Port, true
	case endpoint.SchemeUDP, endpoint.SchemeTCP:
		_, p, _ := net.SplitHostPort(a.HostPort)
		n, err := strconv.ParseUint(p, 10, 16)
		return uint32(n), err == nil
	}
	return 0, false
}

func run(name string, kctx *kong.Context, g Globals, o Options) int {
	log := newLogger(g, o.Stderr).With("role", name)
	slog.SetDefault(log)
	if name != "version" && name != "links" && name != "reload" && name != "seccomp-profile" {
		log.Info("starting", "version", o.Version, "pid", os.Getpid())
	}
	ctx := o.Ctx
	if ctx == nil {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
	}
	rc := &RunContext{Ctx: ctx, Log: log, Stdout: o.Stdout, Stderr: o.Stderr, Version: o.Version, Role: name,
		reload: new(atomic.Pointer[func() []any])}
	defer onHangup(rc, o.Reload)()
	err := kctx.Run(rc)
	var ee *ExitError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		if ee.Err != nil {
			log.Error(ee.Err.Error())
		}
		return ee.Code
	default:
		log.Error(err.Error())
		return ExitFailure
	}
}

// onHangup reloads the role at every SIGHUP (or reload, in tests), as
// systemd's ExecReload means it: never a stop, which would leave a relay
// down after a habitual HUP (logrotate, systemctl kill -s HUP). It returns
// the function that stops listening.
func onHangup(rc *RunContext, reload <-chan struct{}) (stop func()) {
	hup := make(chan os.Signal, 1)
	if reload == nil {
		signal.Notify(hup, syscall.SIGHUP)
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
			case <-reload:
			case <-done:
				return
			}
			fn := rc.reload.Load()
			if fn == nil {
				rc.Log.Info("SIGHUP: nothing to reload here; still running")
				continue
			}
			rc.Log.Info("SIGHUP: reloaded; still running", (*fn)()...)
		}
	}()
	return sync.OnceFunc(func() { signal.Stop(hup); close(done) })
}

func newLogger(g Globals, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: logLevels[g.LogLevel]} // one of the enum's
	if f, ok := w.(*os.File); ok && systemd.JournalStream(f) {
		// Under systemd: the journal's priorities, and its time stamp.
		return slog.New(systemd.NewJournalHandler(w, g.LogFormat == "json", opts))
	}
	if g.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

type versionCmd struct{}

func (v *versionCmd) Run(rc *RunContext) error {
	_, err := fmt.Fprintf(rc.Stdout, "%s %s\n", BinaryName, rc.Version)
	return err
}
