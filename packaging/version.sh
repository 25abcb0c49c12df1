#!/bin/sh
# The packages' version (make packages' PKG_VERSION), from git describe:
# a tag v1.2.3 gives 1.2.3, N commits after it 1.2.3+gitN.gHASH (above
# 1.2.3 for dpkg and rpm alike: "~" would sort it below), a pre-release
# tag v1.2.3-rc1 1.2.3~rc1 (below 1.2.3); no tag: 0.0.0~gitN.HASH.
v=$(git describe --tags --match 'v[0-9]*' 2>/dev/null) &&
  echo "${v#v}" | sed -E -e 's/-([0-9]+)-(g[0-9a-f]+)$/+git\1.\2/' -e 's/-/~/g' ||
  echo "0.0.0~git$(git rev-list --count HEAD 2>/dev/null || echo 0).$(git rev-parse --short HEAD 2>/dev/null || echo dev)"
