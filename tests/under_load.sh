#!/usr/bin/env bash
# `make test-under-load`: run a command (the test suite) beside a CPU hog on every core, as on a
# shared CI runner or a laptop busy with other work. The hogs are bounded (HOG_SECONDS, default
# 40 minutes) and killed as soon as the command ends, whatever its result (or on Ctrl-C).
set -uo pipefail
cores=$(nproc)
hog_seconds=${HOG_SECONDS:-2400}
pids=()
stop() {
  if ((${#pids[@]})); then
    kill "${pids[@]}" 2>/dev/null
    wait "${pids[@]}" 2>/dev/null
  fi
}
trap stop EXIT
trap 'exit 130' INT TERM
for _ in $(seq "$cores"); do
  timeout "$hog_seconds" sh -c 'while :; do :; done' &
  pids+=("$!")
done
echo "under load: $cores CPU hogs (pids ${pids[*]}), for at most ${hog_seconds}s" >&2
"$@"
