// Package roles holds katatrace's roles: what each one does, its flags (kong
// structs with KATATRACE_* environment twins) and its Run, and a registry from
// role name to role. The binary picks a role by the name it was called by
// (a symlink), or takes it as a subcommand: see Main.
package roles
