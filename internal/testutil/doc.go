// Package testutil has the helpers katatrace's tests share: short socket
// directories, and a UDP sink on loopback that does not drop.
package testutil
