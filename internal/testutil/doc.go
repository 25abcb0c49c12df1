// Package testutil has the helpers katatrace's tests share: short socket
// directories, a UDP sink on loopback that does not drop, polling until a
// condition holds, and child processes (the katatrace binary, QEMU) whose
// output is kept and which are stopped when the test ends.
package testutil
