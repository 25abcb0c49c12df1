// Package lowmem keeps the resident size of a katatrace process close to the
// code it runs. The kernel maps a file page's neighbours with it
// (fault-around; whole large folios on recent kernels), so a static binary
// holding every role (gRPC and protobuf among them) ends up mostly counted
// in the RSS of a relay that runs a small part of it. Its init, which runs
// before the big dependencies' (Go initializes ready packages in
// import-path order, and this one needs only syscall), unmaps what the
// runtime's start mapped of the executable's read-only segments, asks for
// no readahead, and goes on unmapping every 5 ms while the process starts
// (every library's init and the first garbage collection touch much of
// the binary once), until Settle, when the role is up, or a second. Settle
// and TrimExecutable unmap once more and drop the executable's pages that
// no process maps from the page cache: fault-around maps only cached
// pages, so a page used again then comes back alone, read from the file.
// Idle guest relay, same build: 9.6 MB RSS before, 6.0-6.2 MB after; peak
// while starting 11.4-11.6 MB before, 8.6-9.1 MB after. Outside Linux it
// does nothing.
package lowmem
