#!/usr/bin/env bash
# The benchmark's recipe: builds the bench store with the real tools (buildah, skopeo, podman)
# and fills a local docker-registry with the same images. Called by bench/run.sh, which has
# already started docker-registry on $REG (its data lives in $W/registry) and decides whether
# this recipe needs to run at all (stamp = sha256 of this file, make-many.ts, the relayer and
# the Go gzip oracle it runs, + scale).
#
#   $W/store/{root,run}   overlay store: localhost/bench/{small,large,layered}:1
#   $W/mirror/{root,run}  overlay store: the three images pulled back from docker-registry
#   $W/mirror-go6/{root,run} overlay store: bench/layered-go6:1 (bench/layered as docker/BuildKit push it)
#   $W/many/{root,run}    overlay store: the layered image + COUNT images sharing its layers
#   $W/plain/            files for the plain-read ceiling (made by the harness)
#   registry $REG         bench/{small,large,layered}:1, pushed by skopeo (gzip, OCI); bench/layered-go6:1
#
# Inputs (env): W, REG, SCALE (full|small).
set -euo pipefail
: "${W:?}" "${REG:?}" "${SCALE:?}"
cd "$(dirname "$0")/.."
log() { echo "bench: $(date -u +%H:%M:%S) $*" >&2; }

if [ "$SCALE" = full ]; then
  SMALL_DIRS=(man icons zoneinfo mime perl)       # about 34k files, 160 MB (Debian 12)
  LARGE_MB=100
  STEP_FILES=2000 STEP_MB=8
  BASE_EXTRA=/usr/lib/python3.11
  MANY=10000
else
  SMALL_DIRS=(zoneinfo mime)                      # about 2k files, 10 MB
  LARGE_MB=8
  STEP_FILES=200 STEP_MB=2
  BASE_EXTRA=/usr/share/zoneinfo
  MANY=1000
fi

S=$W/store
B() { buildah --root "$S/root" --runroot "$S/run" --storage-driver overlay "$@"; }
# commit the mounted working container $c as image $1 with history comment $2
commit_as() { B umount "$c" >/dev/null; B config --created-by "$2" "$c"; B commit -q "$c" "$1" >/dev/null; B rm "$c" >/dev/null; }

log "image 1/3: many small files (/usr/share/{${SMALL_DIRS[*]}})"
c=$(B from scratch)
mnt=$(B mount "$c")
mkdir -p "$mnt/usr/share"
for d in "${SMALL_DIRS[@]}"; do cp -a "/usr/share/$d" "$mnt/usr/share/$d"; done
commit_as localhost/bench/small:1 "csreg bench: many small files"

log "image 2/3: three large files of $LARGE_MB MB (random, base64 text, log text)"
c=$(B from scratch)
mnt=$(B mount "$c")
mkdir -p "$mnt/data"
head -c $((LARGE_MB * 1048576)) /dev/urandom > "$mnt/data/random.bin"
# (head closes the pipe early: the writer's SIGPIPE is expected, the size is checked below)
{ base64 -w 76 /dev/urandom | head -c $((LARGE_MB * 1048576)) > "$mnt/data/base64.txt"; } || true
# Log-like text (compressible as real logs are): bounded by head.
awk 'BEGIN { srand(7); for (i = 0; ; i++) printf "2026-11-%02d %02d:%02d:%02d.%03d INFO request method=GET path=/v2/app%d/blobs/sha256:%08x%08x status=%d bytes=%d ms=%.3f\n", 1 + i % 28, i % 24, i % 60, (i * 7) % 60, i % 1000, int(rand() * 50), int(rand() * 4294967295), i, (rand() < 0.9 ? 200 : 404), int(rand() * 1e7), rand() * 100 }' \
  | head -c $((LARGE_MB * 1048576)) > "$mnt/data/requests.log" || true
for f in random.bin base64.txt requests.log; do
  [ "$(stat -c %s "$mnt/data/$f")" -eq $((LARGE_MB * 1048576)) ] || { echo "bench: $f has the wrong size" >&2; exit 1; }
done
commit_as localhost/bench/large:1 "csreg bench: large files"

log "image 3/3: five layers (busybox + $BASE_EXTRA, then 4 x ($STEP_FILES files + $STEP_MB MB))"
c=$(B from scratch)
mnt=$(B mount "$c")
mkdir -p "$mnt/bin" "$mnt/opt" "$mnt/tmp"
cp /bin/busybox "$mnt/bin/busybox"
for t in sh mkdir head seq echo cat dd rm; do ln -s busybox "$mnt/bin/$t"; done
cp -a "$BASE_EXTRA" "$mnt/opt/base"
B umount "$c" >/dev/null
B commit -q "$c" localhost/bench/layered:step0 >/dev/null
B rm "$c" >/dev/null
prev=localhost/bench/layered:step0
for i in 1 2 3 4; do
  c=$(B from "$prev")
  B run --isolation chroot "$c" -- sh -c "mkdir -p /data/step$i && cd /data/step$i && for n in \$(seq 1 $STEP_FILES); do echo \"step $i file \$n: \$(seq \$n \$((n + n % 40)))\" > f\$n.txt; done && head -c $((STEP_MB * 1048576)) /dev/urandom > blob.bin"
  B commit -q "$c" "localhost/bench/layered:step$i" >/dev/null
  B rm "$c" >/dev/null
  prev=localhost/bench/layered:step$i
done
B tag "$prev" localhost/bench/layered:1
# The steps stay as untagged images (their layers are the chain of layered:1).
for i in 0 1 2 3 4; do podman --root "$S/root" --runroot "$S/run" --storage-driver overlay untag "localhost/bench/layered:step$i" "localhost/bench/layered:step$i" 2>/dev/null || true; done

src() { echo "containers-storage:[overlay@$S/root+$S/run]$1"; }
for img in small large layered; do
  log "pushing bench/$img:1 to docker-registry $REG (skopeo, gzip)"
  skopeo copy -q --dest-tls-verify=false "$(src "localhost/bench/$img:1")" "docker://$REG/bench/$img:1"
done

# The mirror store: the same images pulled back from docker-registry, as a store of pulled images
# holds them (layers keep their compressed digests; csreg serves the original manifests and
# blobs through recompression recipes, the very bytes docker-registry serves).
for img in small large layered; do
  log "pulling bench/$img:1 back from docker-registry into the mirror store (skopeo)"
  skopeo copy -q --src-tls-verify=false "docker://$REG/bench/$img:1" "containers-storage:[overlay@$W/mirror/root+$W/mirror/run]$REG/bench/$img:1"
done

# A pulled image as docker or BuildKit pushes one: bench/layered with its layers compressed by
# Go's compress/gzip at the default level (test/oracles/gogzip) and BuildKit's config, through
# docker-registry into a store of its own (the commonest kind of layer on public registries; in
# the mirror store, skopeo would reuse the layers bench/layered brought, keeping their digests).
log "bench/layered-go6:1: bench/layered as docker/BuildKit push it (Go compress/gzip 6), via docker-registry into its own store"
mkdir -p "$W/gogzip/src/gogzip"
cp test/oracles/gogzip/main.go "$W/gogzip/src/gogzip/"
(cd "$W/gogzip/src/gogzip" && GO111MODULE=off GOPATH="$W/gogzip:/usr/share/gocode" GOCACHE="$W/gogzip/cache" GOFLAGS= go build -o "$W/gogzip/gogzip" .)
skopeo copy -q --dest-oci-accept-uncompressed-layers "$(src localhost/bench/layered:1)" "oci:$W/gogzip/plain:x"
AS_BUILDKIT=1 python3 test/fixtures/relayer.py "$W/gogzip/plain" "$W/gogzip/go6" "$W/gogzip/gogzip" -level 6
skopeo copy -q --dest-tls-verify=false "oci:$W/gogzip/go6:x" "docker://$REG/bench/layered-go6:1"
skopeo copy -q --src-tls-verify=false "docker://$REG/bench/layered-go6:1" "containers-storage:[overlay@$W/mirror-go6/root+$W/mirror-go6/run]$REG/bench/layered-go6:1"
rm -rf "$W/gogzip"

log "store of $MANY images sharing the layered image's layers"
M=$W/many
skopeo copy -q "$(src localhost/bench/layered:1)" "containers-storage:[overlay@$M/root+$M/run]localhost/bench/layered:1"
node dist/bench/make-many.js --root "$M/root" --runroot "$M/run" --count "$MANY" --from localhost/bench/layered:1
# Check with the Go tools. (A full `podman images` is no check here: podman 4.3 compares the
# configs of pairs of images that share a top layer; it took > 60 s at 1,000 images, and even
# `--filter reference=` 4.7 s.)
P() { podman --root "$M/root" --runroot "$M/run" --storage-driver overlay "$@"; }
rows=$(containers-storage -g "$M/root" -R "$M/run" -s overlay images -q | wc -l)
last=localhost/bench/many/r$(printf %04d $(( (MANY - 1) / 5 ))):t$(( (MANY - 1) % 5 ))
log "containers-storage lists $rows images (expected $((MANY + 1)))"
[ "$rows" -eq $((MANY + 1)) ] && P image exists localhost/bench/many/r0000:t0 && P image exists "$last" \
  || { echo "bench: the Go tools do not see the $MANY images" >&2; exit 1; }
echo "$MANY" > "$M/count"
log "store built"
