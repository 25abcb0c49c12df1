// Package lowmem keeps the resident size of a katatrace process close to the
// code it runs. The kernel maps a file page's neighbours with it
// (fault-around), so a static binary holding every role (gRPC and protobuf
// among them) ends up mostly counted in the RSS of a relay that runs a
// small part of it. Its init, which runs before the big dependencies' (Go
// initializes ready packages in import-path order, and this one needs only
// syscall), unmaps what the runtime's start mapped of the executable's
// read-only segments and asks for no readahead; TrimExecutable does the
// same once a role is up, and also drops the executable's pages that no
// process maps from the page cache: fault-around maps only cached pages
// (MADV_RANDOM does not stop it), so a page used again then comes back
// alone, read from the file. Idle guest relay, same build: 9.6 MB RSS
// with the page cache kept, 7.1 MB with it dropped. Outside Linux it does
// nothing.
package lowmem
