#!/bin/sh
# make deb: the Debian packages, built from the tree `make distdir` wrote (what a release
# tarball holds, uncommitted work included), then checked by lintian.
#
#   build_debs.sh DISTDIR OUTDIR
#
# DISTDIR is moved into a temporary folder and built there with dpkg-buildpackage -us -uc
# -b (DEB_BUILD_OPTIONS=nocheck and profile nocheck: make check tests the same code);
# OUTDIR receives the .deb files, the .changes and .buildinfo and lintian.log (whatever
# was in OUTDIR before is replaced). Exit status 1 when the build fails or lintian
# reports an error (E:); warnings and informational tags are listed.
set -eu
[ $# -eq 2 ] || { echo "usage: build_debs.sh DISTDIR OUTDIR" >&2; exit 2; }
distdir=$1
out=$2
say() { printf 'deb: %s\n' "$*"; }
for tool in dpkg-buildpackage dh lintian; do
    command -v "$tool" >/dev/null 2>&1 ||
        { say "$tool not found: run ./quickstart package, which installs what packaging needs"; exit 1; }
done
work=$(mktemp -d /tmp/iotgw-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
mv "$distdir" "$work/src"
version=$(cd "$work/src" && dpkg-parsechangelog -S Version)
say "dpkg-buildpackage -us -uc -b: iotgw $version (log: $out/build.log)"
mkdir -p "$out"
rm -f "$out"/*.deb "$out"/*.changes "$out"/*.buildinfo "$out"/lintian.log "$out"/build.log
t=$(date +%s)
rc=0
(cd "$work/src" && DEB_BUILD_OPTIONS="nocheck parallel=${JOBS:-2}" dpkg-buildpackage -us -uc -b -Pnocheck) \
    >"$out/build.log" 2>&1 || rc=$?
if [ "$rc" -ne 0 ]; then
    tail -40 "$out/build.log"
    say "dpkg-buildpackage failed (exit $rc; the whole log: $out/build.log)"
    exit 1
fi
cp "$work"/*.deb "$work"/*.changes "$work"/*.buildinfo "$out"/
say "built in $(($(date +%s) - t)) s: $(cd "$out" && ls ./*.deb | sed 's|^\./||' | tr '\n' ' ')"
rc=0
lintian --fail-on error --display-info "$out"/*.changes >"$out/lintian.log" 2>&1 || rc=$?
grep -E '^[EWIXO]: ' "$out/lintian.log" | sed 's/^/  /' || true
if [ "$rc" -ne 0 ]; then
    say "lintian reports errors (exit $rc; $out/lintian.log)"
    exit 1
fi
say "lintian: no errors, $(grep -c '^W: ' "$out/lintian.log" || true) warnings, $(grep -c '^I: ' "$out/lintian.log" || true) informational tags"
say "packages in $out"
