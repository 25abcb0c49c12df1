#!/bin/sh
# katatrace-host: after its files are in place. dpkg: "configure" with the
# version replaced ("" at a first install); rpm: how many versions are
# installed now (1: a first install, 2 or more: an upgrade).
set -e
# KATATRACE_PKG_SYSTEMD_RUN: the tests' stand-in for /run/systemd/system,
# which says systemd runs (not an image being built).
first=
case "$1" in
  configure) [ -n "$2" ] || first=1 ;;
  1) first=1 ;;
  [0-9]*) ;;
  *) exit 0 ;; # abort-upgrade and the like: nothing to redo
esac
command -v systemctl >/dev/null 2>&1 || exit 0
# Kata's run directories, from the tmpfiles.d entry, before any unit
# starts: a directory missing at a unit's start stays read-only to it.
if command -v systemd-tmpfiles >/dev/null 2>&1; then
  systemd-tmpfiles --create /usr/lib/tmpfiles.d/katatrace.conf || true
fi
if [ -n "$first" ]; then
  # As the unit's [Install] says (multi-user.target), not started: its
  # --to is the node's to give (a drop-in). The Kata 1.x host relays are
  # for 1.x guests only: enabled by hand.
  systemctl enable kata-trace-forwarder.service >/dev/null 2>&1 || true
fi
[ -d "${KATATRACE_PKG_SYSTEMD_RUN:-/run/systemd/system}" ] || exit 0 # an image being built, a container
systemctl daemon-reload || true
if [ -z "$first" ]; then
  # An upgrade: restart what runs, never stop it. A restart hands every
  # connection to the new process through the file descriptor store; a
  # stop would empty the store and end every agent's tracing.
  systemctl try-restart kata-trace-forwarder.service vsock-to-udp-server.service vsock-to-text-server.service || true
fi
