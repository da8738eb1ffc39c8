#!/bin/bash
# The CPU a depot spends while its PXE directory is full (BENCHMARKS.md,
# eighteenth pass). Needs root (a tmpfs is mounted) and the directory of a
# kept load-test run holding configs:
#   pxeconf loadtest --scenario direct --clients 20000 --depots 1 \
#       --legacy-depots 0 --keep --dir /tmp/m
#   bash benches/full_dir_retry.sh target/release/pxeconf /tmp/m
# Prints the depot's user + system ticks (2,000 = one core) over the 20 s
# after its first 10 s, on a copy of the run's journal, with --pxe-dir a
# 1 MiB tmpfs filled to the last block.
set -euo pipefail
BIN=$1 RUN=$2
FULL=$(mktemp -d) WORK=$(mktemp -d)
mount -t tmpfs -o size=1m tmpfs "$FULL"
trap 'kill $PID 2>/dev/null || true; umount "$FULL"; rm -rf "$FULL" "$WORK"' EXIT
dd if=/dev/zero of="$FULL/fill" bs=4k 2>/dev/null || true
cp -a "$RUN/depot1.state" "$WORK/state"
"$BIN" depot --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
    --depot-id depot1.loadtest.invalid --pxe-dir "$FULL" \
    --template-dir "$RUN/templates" --state-dir "$WORK/state" \
    --configserver http://127.0.0.1:1 --host-key-file "$RUN/keys/depot1.key" \
    > "$WORK/log" 2>&1 &
PID=$!
sleep 10
T0=$(awk '{print $14+$15}' "/proc/$PID/stat")
sleep 20
T1=$(awk '{print $14+$15}' "/proc/$PID/stat")
echo "CPU ticks over 20 s: $((T1 - T0)); $(grep VmRSS "/proc/$PID/status")"
