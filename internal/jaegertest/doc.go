// Package jaegertest makes real Jaeger client traffic for tests: a
// jaeger-client-go tracer reporting over UDP, and the traces the tests send.
package jaegertest
