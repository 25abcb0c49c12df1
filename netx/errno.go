package netx

import "syscall"

const syscallEMFILE = syscall.EMFILE
