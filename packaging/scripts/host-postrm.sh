#!/bin/sh
# katatrace-host: after its files went: systemd forgets the units removed.
# dpkg: "remove" or "purge" (not "upgrade"); rpm: 0 versions remain.
set -e
case "$1" in
  remove | purge | 0) ;;
  *) exit 0 ;;
esac
if [ -d "${KATATRACE_PKG_SYSTEMD_RUN:-/run/systemd/system}" ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload || true
fi
