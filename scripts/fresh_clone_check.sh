#!/usr/bin/env bash
# Clone the committed tree into a temporary folder and time what a new user runs there:
# `make test`, `make demo` and a second `make demo` (which must skip every finished stage).
# Usage: scripts/fresh_clone_check.sh [workdir]
set -euo pipefail
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
work=${1:-$(mktemp -d)}
git clone -q "$repo" "$work/toonforge"
cd "$work/toonforge"
timed() {
  local name=$1; shift
  local start; start=$(date +%s)
  "$@"
  echo "fresh-clone: $name took $(( $(date +%s) - start ))s"
}
timed "make install" make install
timed "make test" make test
timed "make demo" make demo
timed "second make demo" make demo
echo "fresh-clone: done in $work/toonforge"
