#!/bin/sh
# katatrace-host: after its files went: systemd forgets the units removed.
# dpkg: "remove" or "purge" (not "upgrade"); rpm: 0 versions remain.
# dpkg's purge disables the units its removal left enabled (prerm): with
# their files gone systemctl still removes the links enable made.
set -e
case "$1" in
  remove | purge | 0) ;;
  *) exit 0 ;;
esac
command -v systemctl >/dev/null 2>&1 || exit 0
if [ "$1" = purge ]; then
  systemctl disable kata-trace-forwarder.service vsock-to-udp-server.service vsock-to-text-server.service >/dev/null 2>&1 || true
fi
if [ -d "${KATATRACE_PKG_SYSTEMD_RUN:-/run/systemd/system}" ]; then
  systemctl daemon-reload || true
fi
