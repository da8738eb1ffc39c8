#!/usr/bin/env python3
"""Where an idle push's time goes: the median time of each step of a
trickle's actions, from syscall tracepoints of every process (no sampling).

    perf record -a -o /tmp/trickle.perf \
        -e syscalls:sys_enter_writev,syscalls:sys_exit_recvfrom \
        -e syscalls:sys_enter_pwrite64,syscalls:sys_enter_fcntl \
        -e syscalls:sys_enter_rename,syscalls:sys_enter_renameat2 \
        -e syscalls:sys_enter_linkat -- sleep 14 &
    pxeconf loadtest --scenario trickle --path new --clients 200 \
        --legacy-depots 0 --depots 1 --trickle-clients 300 --trickle-rate 50
    perf script -i /tmp/trickle.perf -F comm,pid,tid,time,event,trace > /tmp/trickle.txt
    python3 benches/trickle_timeline.py /tmp/trickle.txt

The roles are found in the trace: the configserver is the process with
the store's SQLite threads (sqlx's or its own), the depot the one that renames or links, the load generator
the other one that writes most. An action starts with the load generator's
first write after 5 ms of silence; its steps are the first matching events
within 8 ms. Times are µs after that first write (docs/BENCHMARKS.md, sixth
pass). One depot and one SQLite store: the matching assumes nothing else
writes meanwhile.
"""

import argparse
import collections
import re
import statistics

LINE = re.compile(r"\s*(\S+)\s+(\d+)/(\d+)\s+([\d.]+):\s+syscalls:(\w+):")
GAP_US = 5000
WINDOW_US = 8000


def events(path):
    """(µs, pid, tid, comm, tracepoint) per line of `perf script`."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if m:
                comm, pid, tid, t, name = m.groups()
                out.append((float(t) * 1e6, int(pid), int(tid), comm, name))
    return out


def roles(ev):
    """The configserver's, the depot's and the load generator's pids."""
    cs = collections.Counter(e[1] for e in ev if store_thread(e)).most_common(1)
    depot = collections.Counter(e[1] for e in ev if placed(e)).most_common(1)
    if not cs or not depot:
        raise SystemExit("no configserver (store threads) or no depot (renames, links) in the trace")
    cs, depot = cs[0][0], depot[0][0]
    writers = collections.Counter(
        e[1] for e in ev if e[4] == "sys_enter_writev" and e[1] not in (cs, depot)
    ).most_common(1)
    if not writers:
        raise SystemExit("no load generator (writes to the configserver) in the trace")
    return cs, depot, writers[0][0]


def store_thread(e):
    """A thread of the configserver's store: sqlx's SQLite threads, or the
    store's own (`store-write`, `store-read-N`)."""
    return e[3].startswith(("sqlx", "store-"))


def placed(e):
    """A config put in place: renamed, or (a new client's) linked in."""
    return "rename" in e[4] or "linkat" in e[4]


def first(window, test):
    return next((e[0] for e in window if test(e)), None)


def timeline(ev):
    cs, depot, gen = roles(ev)
    starts, last = [], float("-inf")
    for e in ev:
        if e[1] == gen and e[4] == "sys_enter_writev":
            if e[0] - last > GAP_US:
                starts.append(e[0])
            last = e[0]
    steps = collections.defaultdict(list)
    for start in starts:
        window = [e for e in ev if start <= e[0] < start + WINDOW_US]
        read = first(window, lambda e: e[1] == cs and e[4] == "sys_exit_recvfrom")
        if read is None:
            continue
        sql = [e for e in window if e[1] == cs and store_thread(e) and e[0] > read]
        writes = [e[0] for e in window if e[1] == cs and e[4] == "sys_enter_writev"]
        found = {
            "1 the configserver reads the request": read,
            "2 the write's first SQL syscall": sql[0][0] if sql else None,
            "3 its commit (WAL write)": first(sql, lambda e: e[4] == "sys_enter_pwrite64"),
            "4 Admin response written": writes[0] if writes else None,
            "5 push written to the depot": writes[1] if len(writes) > 1 else None,
            "6 the depot reads it": first(window, lambda e: e[1] == depot and e[4] == "sys_exit_recvfrom"),
            "7 config in place (rename or link)": first(window, lambda e: e[1] == depot and placed(e)),
        }
        for step, at in found.items():
            if at is not None:
                steps[step].append(at - start)
    return len(starts), steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace", help="`perf script -F comm,pid,tid,time,event,trace` output")
    args = parser.parse_args()
    actions, steps = timeline(events(args.trace))
    print(f"actions: {actions}")
    for step in sorted(steps):
        times = steps[step]
        print(f"{step[2:]:40s} n={len(times):4d}  median {statistics.median(times):7.0f} µs")


if __name__ == "__main__":
    main()
