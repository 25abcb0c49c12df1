// Package handover hands a host role's kept sockets (its listeners, its
// guests' connections, the state of a stop) to the next process over a
// unix socket, with SCM_RIGHTS: the file descriptor store's handover
// where no service manager keeps one. A DaemonSet's rollout with
// maxSurge 1 starts the new pod beside the old; the new process takes
// everything from the old before that one exits, so that no Kata agent
// (whose exporter never reconnects) loses its connection.
//
// Store is the process's own store, kept as systemd keeps one: a copy of
// each socket by name. Offer waits at the socket for a successor and
// gives it the store's contents; Take is the successor's side.
package handover
