// Package spanagent is the test stand-in for the Kata agent, one for every
// test that runs an agent: the re-executed test binary under the shim, and
// the static binary inside the test VMs. It traces with jaeger-client-go,
// configured from the environment the shim gives it (JAEGER_AGENT_HOST and
// _PORT, UBER_TRACE_ID), as a Go agent would.
package spanagent
