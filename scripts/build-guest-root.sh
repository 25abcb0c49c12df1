#!/usr/bin/env bash
# Build a minimal systemd guest root (Debian minbase + systemd) as a tar, for
# the systemd guest test and as a starting point for a Kata guest image.
# The Debian mirror is read from this machine's own apt configuration, so
# nothing here names one.
#
#   scripts/build-guest-root.sh OUT.tar
set -euo pipefail
out=${1:-e2e/vm/.cache/guest-root.tar}
# socat: the seed's guest pair, measured beside katatrace's processes.
include=systemd,systemd-sysv,udev,kmod,socat
# A root built with other packages is built again.
if [[ -s $out && $(cat "$out.packages" 2>/dev/null) == "$include" ]]; then
	echo "guest root already at $out"
	exit 0
fi
command -v mmdebstrap >/dev/null || { echo "build-guest-root: mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 1; }
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:?}")
# Every Debian repository apt knows here (the release, its updates and
# security), as one-line sources for mmdebstrap's standard input.
sources=$(apt-get indextargets --format 'deb $(REPO_URI) $(RELEASE) $(COMPONENT)' \
	'Identifier: Packages' 'Origin: Debian' | sort -u)
if [[ -z $sources ]]; then
	echo "build-guest-root: apt knows no Debian repository (run apt-get update)" >&2
	exit 1
fi
mkdir -p "$(dirname "$out")"
tmp="$out.partial"
trap 'rm -f "$tmp"' EXIT
# A guest image needs no documentation, manual pages or translations
# (a third of the root).
excludes=()
for p in '/usr/share/doc/*' '/usr/share/man/*' '/usr/share/locale/*' '/usr/share/info/*'; do
	excludes+=(--dpkgopt="path-exclude=$p")
done
echo "$sources" | mmdebstrap --quiet --variant=minbase \
	--include="$include" "${excludes[@]}" \
	--format=tar "$suite" "$tmp" -
mv "$tmp" "$out"
echo "$include" >"$out.packages"
echo "guest root ($suite) at $out: $(du -h "$out" | cut -f1)"
