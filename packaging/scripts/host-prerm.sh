#!/bin/sh
# katatrace-host: before its files go. dpkg: "remove" for a removal,
# "upgrade" (and others) when a version replaces it; rpm: how many
# versions remain (0: a removal). Only a removal stops the units: an
# upgrade restarts them after (the new version's postinst), for a stop
# empties the file descriptor store and ends every agent's tracing.
# dpkg's removal stops and leaves them enabled, as debhelper does: the
# package stays in the config-files state, a reinstall's postinst gets
# "configure <old version>" (an upgrade's) and must find the units as the
# node left them; its purge (postrm) disables them. rpm has no such state:
# its removal disables too.
set -e
case "$1" in
  remove | 0) ;;
  *) exit 0 ;;
esac
command -v systemctl >/dev/null 2>&1 || exit 0
units="kata-trace-forwarder.service vsock-to-udp-server.service vsock-to-text-server.service"
if [ "$1" = 0 ]; then
  systemctl disable $units >/dev/null 2>&1 || true
fi
if [ -d "${KATATRACE_PKG_SYSTEMD_RUN:-/run/systemd/system}" ]; then
  systemctl stop $units || true
fi
