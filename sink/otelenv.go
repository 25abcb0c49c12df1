package sink

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// OTLP's protocols, as OTEL_EXPORTER_OTLP_PROTOCOL names them.
const (
	ProtoGRPC = "grpc"
	ProtoHTTP = "http/protobuf"
)

// OTELEnv is OpenTelemetry's exporter environment, as the SDKs read it:
// each OTEL_EXPORTER_OTLP_TRACES_* variable overrides its
// OTEL_EXPORTER_OTLP_* twin, and an empty one counts as unset. The *Var
// fields name the variable a value came from, for errors.
type OTELEnv struct {
	Endpoint, EndpointVar string // "" when unset
	// Base is set when Endpoint is OTEL_EXPORTER_OTLP_ENDPOINT: over
	// HTTP, /v1/traces is appended to its path (the signal's own
	// variable is used as it is, but for an empty path: see
	// OTLPTargetFromURL).
	Base                  bool
	Protocol, ProtocolVar string // ProtoGRPC or ProtoHTTP; "" when unset
	Headers               map[string]string
	HeadersVar            string
	Timeout               time.Duration // 0 when unset
	Gzip, GzipSet         bool
	CAFile, CertFile      string
	KeyFile               string
	Insecure              bool
	ServiceName           string
	Resource              []Attr // OTEL_RESOURCE_ATTRIBUTES, in order
}

// Attr is one resource attribute.
type Attr struct{ Key, Value string }

// ReadOTELEnv reads OpenTelemetry's environment through lookup
// (os.LookupEnv); an invalid value is an error naming its variable.
func ReadOTELEnv(lookup func(string) (string, bool)) (OTELEnv, error) {
	var e OTELEnv
	get := func(name string) (string, string) {
		for _, v := range []string{"OTEL_EXPORTER_OTLP_TRACES_" + name, "OTEL_EXPORTER_OTLP_" + name} {
			if s, ok := lookup(v); ok && strings.TrimSpace(s) != "" {
				return strings.TrimSpace(s), v
			}
		}
		return "", ""
	}
	bad := func(v, s, why string) error { return fmt.Errorf("$%s: %q: %s", v, s, why) }

	e.Endpoint, e.EndpointVar = get("ENDPOINT")
	e.Base = e.EndpointVar == "OTEL_EXPORTER_OTLP_ENDPOINT"
	if s, v := get("PROTOCOL"); v != "" {
		switch s {
		case ProtoGRPC, ProtoHTTP:
			e.Protocol, e.ProtocolVar = s, v
		case "http/json":
			return e, bad(v, s, "OTLP/HTTP with JSON bodies is not supported: give grpc or http/protobuf")
		default:
			return e, bad(v, s, "want grpc or http/protobuf")
		}
	}
	if s, v := get("HEADERS"); v != "" {
		kv, err := parseKeyValues(s)
		if err != nil {
			return e, bad(v, s, err.Error()+" (want KEY=VALUE,KEY=VALUE, values percent-encoded)")
		}
		e.Headers, e.HeadersVar = map[string]string{}, v
		for _, a := range kv {
			if !ValidHeader(a.Key, a.Value) {
				return e, bad(v, s, fmt.Sprintf("%q is not a header name, or its value holds a line break", a.Key))
			}
			e.Headers[strings.ToLower(a.Key)] = a.Value
		}
	}
	if s, v := get("TIMEOUT"); v != "" {
		ms, err := strconv.ParseUint(s, 10, 31)
		if err != nil || ms == 0 {
			return e, bad(v, s, "want a positive number of milliseconds (10000: 10 s)")
		}
		e.Timeout = time.Duration(ms) * time.Millisecond
	}
	if s, v := get("COMPRESSION"); v != "" {
		switch s {
		case "gzip", "none":
			e.Gzip, e.GzipSet = s == "gzip", true
		default:
			return e, bad(v, s, "want gzip or none")
		}
	}
	e.CAFile, _ = get("CERTIFICATE")
	e.CertFile, _ = get("CLIENT_CERTIFICATE")
	e.KeyFile, _ = get("CLIENT_KEY")
	if s, v := get("INSECURE"); v != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return e, bad(v, s, "want true or false")
		}
		e.Insecure = b
	}
	if s, ok := lookup("OTEL_RESOURCE_ATTRIBUTES"); ok && strings.TrimSpace(s) != "" {
		kv, err := parseKeyValues(s)
		if err != nil {
			return e, bad("OTEL_RESOURCE_ATTRIBUTES", s, err.Error()+" (want KEY=VALUE,KEY=VALUE, values percent-encoded)")
		}
		e.Resource = kv
	}
	e.ServiceName, _ = lookup("OTEL_SERVICE_NAME")
	e.ServiceName = strings.TrimSpace(e.ServiceName)
	if e.ServiceName == "" {
		// The SDKs' order: OTEL_SERVICE_NAME, then service.name among
		// the resource attributes.
		for _, a := range e.Resource {
			if a.Key == "service.name" {
				e.ServiceName = a.Value
			}
		}
	}
	return e, nil
}

// parseKeyValues reads W3C baggage's form without its properties:
// KEY=VALUE,KEY=VALUE, spaces around each trimmed, percent-encoding
// decoded.
func parseKeyValues(s string) ([]Attr, error) {
	var out []Attr
	for item := range strings.SplitSeq(s, ",") {
		if strings.TrimSpace(item) == "" {
			continue // a trailing comma
		}
		k, v, ok := strings.Cut(item, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not KEY=VALUE", strings.TrimSpace(item))
		}
		var err error
		if k, err = url.PathUnescape(k); err != nil {
			return nil, fmt.Errorf("%q: bad percent-encoding", k)
		}
		if v, err = url.PathUnescape(v); err != nil {
			return nil, fmt.Errorf("%q: bad percent-encoding", v)
		}
		out = append(out, Attr{k, v})
	}
	return out, nil
}

// ValidHeader says whether k is an HTTP header name and v a value that
// cannot split the request.
func ValidHeader(k, v string) bool {
	return k != "" && !strings.ContainsAny(k, " \t\r\n:()<>@,;\\\"/[]?={}") && !strings.ContainsAny(v, "\r\n")
}

// OTLPTargetFromURL reads an endpoint given as OpenTelemetry's SDKs and
// Kata's --otlp-endpoint take it, an http:// or https:// URL, under
// protocol (ProtoGRPC or ProtoHTTP). Over gRPC the URL's host and port
// are used (a path is refused); when guard is set (the protocol was not
// asked for), an endpoint that is plainly OTLP/HTTP's (port 4318, a
// /v1/traces path) is refused rather than spoken to in the wrong
// protocol. Over HTTP, base (OTEL_EXPORTER_OTLP_ENDPOINT) gets
// /v1/traces appended to its path; any other is used as it is, except
// that no path (or "/") is /v1/traces: the specification says "/", at
// which no collector takes traces, and an operator who gave a host and a
// port meant the collector's traces. insecure
// is OTEL_EXPORTER_OTLP_INSECURE: a gRPC endpoint without a scheme
// (HOST:PORT, as gRPC's clients take it) is in the clear only with it.
// The errors hold no variable's name: the caller's.
func OTLPTargetFromURL(s, protocol string, guard, base, insecure bool) (Target, error) {
	if protocol == ProtoGRPC && !strings.Contains(s, "://") {
		if host, port, err := net.SplitHostPort(s); err == nil && host != "" && port != "" {
			scheme := "otlps://"
			if insecure {
				scheme = "otlp://"
			}
			s = scheme + s
			var t Target
			return t, t.UnmarshalText([]byte(s))
		}
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return Target{}, fmt.Errorf("%q is not an OTLP endpoint: want http://HOST:PORT (https:// with TLS), e.g. http://127.0.0.1:4317", s)
	}
	if u.Port() == "" && !strings.HasSuffix(u.Host, ":") {
		// A URL's own default port, as the SDKs take it (a vendor's
		// https://otlp.example).
		u.Host = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
	}
	if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" || port == "0" {
		return Target{}, fmt.Errorf("%q: give the host and the port, e.g. http://127.0.0.1:4317", s)
	}
	scheme := "otlp"
	if u.Scheme == "https" {
		scheme = "otlps"
	}
	if protocol == ProtoHTTP {
		path := u.Path
		if base {
			path = strings.TrimSuffix(path, "/") + "/v1/traces"
		} else if path == "" {
			path = "/"
		}
		scheme = "otlphttp" + strings.TrimPrefix(u.Scheme, "http")
		var t Target
		return t, t.UnmarshalText([]byte(scheme + "://" + u.Host + path))
	}
	if guard && (u.Port() == "4318" || strings.Contains(u.Path, "/v1/traces")) {
		return Target{}, fmt.Errorf("%q is plainly OTLP/HTTP's (port 4318, or a /v1/traces path), but OTLP/gRPC is spoken to it (unless $OTEL_EXPORTER_OTLP_PROTOCOL says otherwise; Kata's forwarder speaks only gRPC): "+
			"for OTLP/HTTP set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf, or give --to otlphttp://%s; for OTLP/gRPC give the collector's gRPC port (4317)", s, u.Host+u.Path)
	}
	if u.Path != "" && u.Path != "/" {
		return Target{}, fmt.Errorf("%q: an OTLP/gRPC endpoint takes no path (for OTLP/HTTP give otlphttp://%s%s)", s, u.Host, u.Path)
	}
	var t Target
	return t, t.UnmarshalText([]byte(scheme + "://" + u.Host))
}
