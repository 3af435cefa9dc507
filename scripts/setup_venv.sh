#!/usr/bin/env bash
# Creates the project's one virtual environment (TF, TFRS, Beam, TFX, serving API, dev tools).
#
# TFX 1.21 is the only TFX for Python 3.11 and its ml-metadata / TFDV wheels need glibc >= 2.39
# and libstdc++ from GCC >= 13. On older distributions (Debian 12 has glibc 2.36) this script
# side-loads Debian trixie's libc6, libstdc++6 and libgcc-s1 into <venv>/glibc and turns the
# venv's python3.11 into a wrapper that runs the base interpreter under trixie's dynamic loader.
# Every Python the venv starts (pytest, Beam workers, subprocesses) then runs on the newer glibc,
# while every other program on the machine keeps the system's. Plain LD_LIBRARY_PATH does not work
# (the system loader would mix two glibcs).
#
# Usage: scripts/setup_venv.sh [VENV_DIR]   (env: PYTHON=python3.11, EXTRAS=all, TFCASCADE_SIDELOAD=auto|always|never)
set -euo pipefail

VENV=${1:-.venv}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3.11}
EXTRAS=${EXTRAS:-all}
SIDELOAD=${TFCASCADE_SIDELOAD:-auto}
TRIXIE_MIRROR=${TRIXIE_MIRROR:-http://deb.debian.org/debian}

log() { printf '[setup] %s\n' "$*" >&2; }

command -v "$PYTHON" >/dev/null || { log "error: $PYTHON not found; install Python 3.11 or set PYTHON="; exit 2; }
BASE_PY=$("$PYTHON" -c 'import os, sys; print(os.path.realpath(sys.executable))')
"$BASE_PY" -c 'import sys; assert sys.version_info[:2] >= (3, 10), sys.version' \
  || { log "error: Python >= 3.10 is required (got $BASE_PY)"; exit 2; }
GLIBC=$("$BASE_PY" -c 'import os; print(os.confstr("CS_GNU_LIBC_VERSION").split()[1])')

need_sideload=0
case "$SIDELOAD" in
  always) need_sideload=1 ;;
  never) need_sideload=0 ;;
  auto) "$BASE_PY" -c "import sys; sys.exit(0 if tuple(map(int, '$GLIBC'.split('.'))) < (2, 39) else 1)" && need_sideload=1 ;;
  *) log "error: TFCASCADE_SIDELOAD must be auto, always or never (got '$SIDELOAD')"; exit 2 ;;
esac

log "base interpreter $BASE_PY, host glibc $GLIBC, side-load: $need_sideload"
rm -rf "$VENV"
"$BASE_PY" -m venv "$VENV"
VENV=$(cd "$VENV" && pwd)

if [ "$need_sideload" = 1 ]; then
  GL="$VENV/glibc"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs" "$GL"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $TRIXIE_MIRROR trixie main" >"$work/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
            -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
            -o "Dir::State::status=/dev/null" -o "Debug::NoLocking=1"
            -o "APT::Architecture=amd64" -o "APT::Architectures=amd64")
  log "fetching Debian trixie libc6, libstdc++6, libgcc-s1 (private apt state in $work)"
  apt-get -qq "${apt_opts[@]}" update
  (cd "$work/debs" && apt-get -qq "${apt_opts[@]}" download libc6 libstdc++6 libgcc-s1)
  for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$GL"; done
  LIBDIR="$GL/usr/lib/x86_64-linux-gnu"
  LOADER="$LIBDIR/ld-linux-x86-64.so.2"
  [ -e "$LOADER" ] || { log "error: no loader at $LOADER after unpacking"; exit 1; }
  rm -f "$VENV/bin/python3.11"
  cat >"$VENV/bin/python3.11" <<WRAP
#!/bin/sh
exec "$LOADER" --library-path "$LIBDIR" --argv0 "\$0" "$BASE_PY" "\$@"
WRAP
  chmod +x "$VENV/bin/python3.11"
  for alias in python python3; do ln -sf python3.11 "$VENV/bin/$alias"; done
  "$VENV/bin/python" -c 'import os, sys; print("[setup] venv python runs on glibc", os.confstr("CS_GNU_LIBC_VERSION"), sys.prefix)' >&2
fi

PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip wheel
log "installing tfcascade[$EXTRAS] (constraints: constraints/known-good.txt)"
"${PIP[@]}" install -c "$ROOT/constraints/known-good.txt" -e "$ROOT[$EXTRAS]"
log "done: $VENV"
