// Package guestrelay is the guest half of a relay: datagrams read from a
// socket (or handed in) wait in a bounded drop-oldest queue, and one
// reconnecting stream carries them to the host in the wire protocol
// (v2: numbered, confirmed, and resent after a reconnect). Relay runs one
// and stops it so that a clean stop loses nothing it read.
package guestrelay
