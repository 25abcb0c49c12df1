// Package testagent is a stand-in for the Kata agent's gRPC API, for tests:
// real protobuf messages (well-known wrapper types) behind a hand-written
// service description, so no generated code is needed.
package testagent
