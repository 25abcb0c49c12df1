// Package endpoint gives the address syntax of every katatrace flag
// (vsock://, unix://, unixgram://, udp://, tcp://, fd://, serial://,
// stdout) and opens them: listeners (a stale unix socket replaced, systemd's
// sockets by number), dialling, datagram sockets with large buffers, serial
// ports in raw mode, the identity of a unix peer, and watched patterns of
// hybrid-vsock sockets that make a listener for each VM as it starts.
package endpoint
