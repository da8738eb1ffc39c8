#!/bin/bash
# The depot's CPU per config in `direct` (docs/BENCHMARKS.md, ninth pass):
#   benches/depot_cpu.sh target/release/pxeconf 100000
# Runs the load test in the background, reads the depot's utime + stime from
# /proc/<pid>/stat every 100 ms until it exits, and divides the last reading
# by the calls. The whole run counts, the no-op baseline's calls included.
b=$1; n=${2:-100000}
out=$(mktemp)
$b loadtest --scenario direct --clients "$n" --depots 1 --legacy-depots 0 > "$out" 2>&1 &
lt=$!
pid=""
for _ in $(seq 1 200); do
  pid=$(pgrep -f "$(basename "$b") depot" | head -1)
  [ -n "$pid" ] && break
  sleep 0.05
done
last=0
while kill -0 "$pid" 2>/dev/null; do
  t=$(awk '{print $14+$15}' "/proc/$pid/stat" 2>/dev/null) && [ -n "$t" ] && last=$t
  sleep 0.1
done
wait $lt
rate=$(grep -oE "[0-9]+ configs/s" "$out"); noop=$(grep -oE "health Check\): [0-9]+" "$out")
tick=$(getconf CLK_TCK)
echo "$(basename "$b") $rate $noop depot_cpu_ticks=$last us_per_config=$(( last * 1000000 / tick / n ))"
rm -f "$out"
