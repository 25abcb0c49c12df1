// Package fdstore keeps a process's connections in systemd's file
// descriptor store (FileDescriptorStoreMax=), as systemd-journald keeps
// its stream connections: each goes in with FDSTORE=1, a unique FDNAME=
// and FDPOLL=0, and leaves with FDSTOREREMOVE=1 when it ends; the unit's
// next process, after a restart or a crash, gets every one back in
// LISTEN_FDS and LISTEN_FDNAMES and takes it up. A memfd in the store
// carries what a process that stops cleanly hands its successor.
//
// systemd empties the store when the unit is stopped or fails (before
// systemd 254's FileDescriptorStorePreserve=), and closes without a word
// what is sent beyond its size: the Store counts what it holds and says
// when it is full.
package fdstore
