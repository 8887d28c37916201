#!/usr/bin/env bash
# Measures what transport gzip (csreg serve --wire-gzip) does to pull times, to choose its
# default: skopeo copies one image from csreg with wire gzip off and on, over loopback and
# over a rate-limited veth link into a network namespace made here (token-bucket filter;
# netem is not in this kernel). Prints a Markdown table; also writes bench/results/wire-gzip.md.
# Needs root (namespaces), skopeo, buildah; run `npm run build` first.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-100mbit}
RUNS=${RUNS:-3}
W=$(mktemp -d /tmp/csreg-bench-wire-XXXX)
NS=csreg-bench
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  ip link del csreg-b0 2>/dev/null || true
  ip netns del $NS 2>/dev/null || true
  umount -l "$W/root/overlay" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

# A realistic image: text documentation and Python's standard library (compressible, many files).
B="buildah --root $W/root --runroot $W/run --storage-driver overlay"
c=$($B from scratch)
$B copy "$c" /usr/share/doc /usr/share/doc >/dev/null
$B copy "$c" /usr/lib/python3.11 /usr/lib/python3.11 >/dev/null
$B commit -q "$c" localhost/bench/realistic:1 >/dev/null
size=$(node dist/src/cli/main.js --root "$W/root" --runroot "$W/run" storage images --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s)[0].size))')

ip netns add $NS
ip link add csreg-b0 type veth peer name csreg-b1
ip link set csreg-b1 netns $NS
ip addr add 10.213.7.1/24 dev csreg-b0 && ip link set csreg-b0 up
ip netns exec $NS ip addr add 10.213.7.2/24 dev csreg-b1
ip netns exec $NS ip link set csreg-b1 up && ip netns exec $NS ip link set lo up
tc qdisc add dev csreg-b0 root tbf rate "$RATE" burst 256kb latency 100ms

port=5810
declare -A addr
for link in loopback veth; do
  for gz in off on; do
    host=127.0.0.1; [ $link = veth ] && host=10.213.7.1
    node dist/src/cli/main.js serve --root "$W/root" --runroot "$W/run" --addr "$host:$port" --wire-gzip $gz --log-level warn >/dev/null 2>&1 &
    pids+=($!)
    addr[$link-$gz]=$host:$port
    port=$((port + 1))
  done
done
sleep 2

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
pull() { # LINK ADDR → seconds
  local d=$W/pull-$RANDOM prefix=()
  [ "$1" = veth ] && prefix=(ip netns exec $NS)
  local t0=$(date +%s.%N)
  "${prefix[@]}" skopeo copy -q --src-tls-verify=false "docker://$2/localhost/bench/realistic:1" "dir:$d"
  local t1=$(date +%s.%N)
  rm -rf "$d"
  awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}
{
  echo "| link | wire gzip off (s) | wire gzip on (s) | on / off |"
  echo "|---|---|---|---|"
  for link in loopback veth; do
    off=$(for _ in $(seq "$RUNS"); do pull $link "${addr[$link-off]}"; done | median)
    on=$(for _ in $(seq "$RUNS"); do pull $link "${addr[$link-on]}"; done | median)
    label=$link; [ $link = veth ] && label="veth, $RATE"
    printf '| %s | %.2f | %.2f | %.2f |\n' "$label" "$off" "$on" "$(awk -v a="$on" -v b="$off" 'BEGIN { print a / b }')"
  done
} | tee "$W/table.md"
mkdir -p bench/results
{
  echo "# Wire gzip: skopeo copy of one image from csreg ($(date -u +%Y-%m-%d), $(nproc) cores)"
  echo
  echo "Image: /usr/share/doc + /usr/lib/python3.11, $size bytes uncompressed, one layer. Median of $RUNS pulls."
  echo
  cat "$W/table.md"
} > bench/results/wire-gzip.md
