#!/usr/bin/env bash
# `npm run bench`: builds (or reuses) the bench store and a docker-registry holding the same
# images, then runs the harness (dist/bench/main.js), which writes bench/results/latest.{json,md}.
# Needs root (overlay stores), the tools of scripts/setup.sh, and `npm run build` done first.
#
#   BENCH_SCALE=full|small   full (default): ~39k-file, 3×100 MB and 5-layer images, 10,000-image
#                            store; small: tiny versions for developing the harness
#   BENCH_REPS=N             repetitions per measure (default 5; small: 2)
#   BENCH_CONC_REPS=N        repetitions of each concurrent-pull run (default 5, at most N)
#   BENCH_DIR=DIR            work dir (default /var/tmp/csreg-bench); the store is kept in
#                            DIR/SCALE and reused while bench/build-store.sh is unchanged
#   BENCH_MEASURE_BUDGET_S=S a measure stops repeating once it has run S seconds (default 120),
#                            after at least one counted repetition; tables show the n reached
#   BENCH_SECTIONS=a,b       pull,rebuild,concurrency,recompress,formats,first,push,many,cold (default all)
#   BENCH_TMP=DIR            where pulled images are written (default /dev/shm)
#   BENCH_PROFILE=1          run csreg under node --cpu-prof (profiles in DIR/SCALE/profiles; read
#                            them with node dist/bench/profile-top.js); results go to profile.md
#   BENCH_PORT=P             docker-registry on 127.0.0.1:P, csreg on P+1 and P+2 (default 5761)
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${BENCH_SCALE:-full}
case $SCALE in full|small) ;; *) echo "bench: BENCH_SCALE must be full or small" >&2; exit 2 ;; esac
W=${BENCH_DIR:-/var/tmp/csreg-bench}/$SCALE
PORT=${BENCH_PORT:-5761}
REG=127.0.0.1:$PORT
for t in buildah skopeo podman containers-storage docker-registry curl; do
  command -v "$t" >/dev/null || { echo "bench: $t is missing (run scripts/setup.sh)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "bench: run as root (overlay stores)" >&2; exit 1; }
[ -f dist/bench/main.js ] || { echo "bench: run npm run build first" >&2; exit 1; }
log() { echo "bench: $(date -u +%H:%M:%S) $*" >&2; }

umount_below() { # overlay and other mounts left under $W, deepest first
  { grep -o " $W/[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # children the harness started (it also kills them itself on exit)
  if [ -f "$W/pids" ]; then while read -r p; do kill -9 "$p" 2>/dev/null || true; done < "$W/pids"; rm -f "$W/pids"; fi
  wait 2>/dev/null || true
  umount_below
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$W"
umount_below
rm -f "$W/pids"
stamp=$(cat bench/build-store.sh bench/make-many.ts test/fixtures/relayer.py test/oracles/gogzip/main.go | sha256sum | cut -d' ' -f1)-$SCALE
fresh=0
if [ "$(cat "$W/.stamp" 2>/dev/null)" != "$stamp" ]; then
  log "recipe changed or no store yet: rebuilding $W"
  rm -rf "$W"
  mkdir -p "$W"
  fresh=1
fi

mkdir -p "$W/registry/data"
printf 'version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
  "$W/registry/data" "$REG" > "$W/registry/config.yml"
# something already answering there would be measured in its place (and its RSS not found)
if curl -s -o /dev/null "http://$REG/v2/"; then echo "bench: $REG is already in use (a docker-registry left running?)" >&2; exit 1; fi
docker-registry serve "$W/registry/config.yml" > "$W/registry/log" 2>&1 &
REG_PID=$!
pids+=("$REG_PID")
for _ in $(seq 1 100); do curl -sf "http://$REG/v2/" >/dev/null && break; sleep 0.1; done
curl -sf "http://$REG/v2/" >/dev/null || { echo "bench: docker-registry did not start:" >&2; cat "$W/registry/log" >&2; exit 1; }

if [ $fresh = 1 ]; then
  t0=$(date +%s)
  W=$W REG=$REG SCALE=$SCALE bash bench/build-store.sh
  echo "$stamp" > "$W/.stamp"
  log "store built in $(( $(date +%s) - t0 ))s"
else
  log "reusing the store in $W (recipe unchanged)"
fi
[ "${BENCH_BUILD_ONLY:-0}" = 1 ] && exit 0

W=$W REG=$REG REG_PID=$REG_PID CSREG_PORT=$((PORT + 1)) SCALE=$SCALE \
  REPS=${BENCH_REPS:-$([ "$SCALE" = small ] && echo 2 || echo 5)} CONC_REPS=${BENCH_CONC_REPS:-5} \
  SECTIONS=${BENCH_SECTIONS:-all} BENCH_TMP=${BENCH_TMP:-/dev/shm} PROFILE=${BENCH_PROFILE:-0} \
  MEASURE_BUDGET_S=${BENCH_MEASURE_BUDGET_S:-120} \
  RESULTS_NAME=${BENCH_RESULTS_NAME:-$([ "${BENCH_PROFILE:-0}" = 1 ] && echo profile || { [ "$SCALE" = small ] && echo small || echo latest; })} \
  node dist/bench/main.js &
# (in the background and waited for, so that a TERM to this script runs the cleanup at once)
hpid=$!
pids+=("$hpid")
wait "$hpid"
