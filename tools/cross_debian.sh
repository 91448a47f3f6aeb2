#!/usr/bin/env bash
# Features must be the same bytes under Debian 12's and Debian 13's C library. This extracts the real MOSI clips
# (../shared/data/mosi/media) here and inside a minimal root file system of the *other* Debian release, with the
# same venv, Python and checkout bind-mounted at the same paths, and fails naming each clip and array that
# differs. Needs root, apt-get (for mmdebstrap) and Debian's package index; where it cannot run, it says why in
# one line and exits 0, so CI goes on.
#
#   tools/cross_debian.sh            # about a minute: 20 s for the root file system, then two extractions
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=$REPO/.venv/bin/python
skip() { echo "cross_debian: skipped: $*"; exit 0; }

[ "$(id -u)" = 0 ] || skip "needs root (chroot and bind mounts)"
[ -x "$PY" ] || skip "no .venv here: run ./setup.sh first"
. /etc/os-release
case "${VERSION_CODENAME:-}" in
  bookworm) OTHER=trixie GLIB=libglib2.0-0t64 ;;
  trixie) OTHER=bookworm GLIB=libglib2.0-0 ;;
  *) skip "this machine is not Debian 12 or 13 (${PRETTY_NAME:-unknown})" ;;
esac
PREFIX=$("$PY" -c 'import sys; print(sys.base_prefix)')
case "$PREFIX" in
  /usr | /usr/*) skip "Python lives in $PREFIX, which would hide the other release's C library" ;;
esac
if ! command -v mmdebstrap >/dev/null; then
  command -v apt-get >/dev/null || skip "no mmdebstrap and no apt-get to install it"
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap; } >/dev/null 2>&1 ||
    skip "apt-get could not install mmdebstrap"
fi

ROOT=$(mktemp -d /var/tmp/cross-debian.XXXXXX)
# Bind mounts put the checkout, /tmp and the Python prefix inside $ROOT: unmount all of them (deepest first)
# before anything is deleted, and delete without crossing into another file system.
cleanup() {
  grep -o " $ROOT[^ ]*" /proc/mounts | sort -r | while read -r mount; do umount -l "$mount"; done
  if grep -q " $ROOT" /proc/mounts; then
    echo "cross_debian: $ROOT still has mounts; not deleted" >&2
  else
    rm -rf --one-file-system "$ROOT" "$ROOT.here.json" "$ROOT.there.json" "$ROOT.log"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mmdebstrap --quiet --variant=minbase --include="libgl1,$GLIB,libegl1,libgles2,ca-certificates" "$OTHER" "$ROOT" \
  >/dev/null 2>&1 || skip "mmdebstrap could not build $OTHER (no package index?)"
SHARED=$(cd "$REPO/.." && pwd)/shared
for dir in /proc /dev /sys /tmp "$REPO" "$PREFIX" "$SHARED"; do
  mkdir -p "$ROOT$dir"
  mount --rbind "$dir" "$ROOT$dir"
done

here=$ROOT.here.json there=$ROOT.there.json log=$ROOT.log
failed() { echo "cross_debian: extraction failed $1; its last lines:" >&2; tail -20 "$log" >&2; exit 1; }
"$PY" -m tools.feature_digests >"$here" 2>"$log" || failed here
chroot "$ROOT" /bin/sh -c "cd '$REPO' && '$PY' -m tools.feature_digests" >"$there" 2>"$log" || failed "in the chroot"
echo "cross_debian: $(ldd --version | head -1) here, $OTHER in the chroot"
"$PY" -m tools.feature_digests --compare "$here" "$there"
