// Package freeport picks loopback ports for servers that must be told their
// port before they bind it (Jaeger, socat). A port the kernel handed out
// for ":0" and then freed can be handed out again to anyone binding ":0"
// meanwhile; these are picked below the kernel's ephemeral range, where
// the kernel never hands one out, so only another explicit pick can race.
package freeport
