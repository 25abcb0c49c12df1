package hostrelay

import "syscall"

const syscallEMFILE = syscall.EMFILE
