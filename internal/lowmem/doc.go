// Package lowmem keeps the resident size of a katatrace process close to the
// code it runs. The kernel maps a file page's neighbours with it
// (fault-around), so a static binary holding every role (gRPC and protobuf
// among them) ends up mostly counted in the RSS of a relay that runs a
// small part of it. Its init, which runs before the big dependencies' (Go
// initializes ready packages in import-path order, and this one needs only
// syscall), unmaps what the runtime's start mapped of the executable's
// read-only segments and asks for no readahead; TrimExecutable does the
// same once a role is up. The pages stay in the page cache and come back,
// one fault each, when used. Outside Linux it does nothing.
package lowmem
