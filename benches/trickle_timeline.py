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

LINE = re.compile(
    r"\s*(\S+)\s+(\d+)/(\d+)\s+([\d.]+):\s+syscalls:(\w+):"
    r"(?:\s+fd: (0x[0-9a-f]+))?(?:, cmd: (0x[0-9a-f]+))?"
)
# fcntl's record locks (F_GETLK, F_SETLK, F_SETLKW and their OFD forms):
# SQLite's; its other fcntl calls (flags, dup) are not steps.
LOCKS = {5, 6, 7, 36, 37, 38}
GAP_US = 5000
WINDOW_US = 8000


def events(path):
    """(µs, pid, tid, comm, tracepoint, fd or None, cmd or None) per line of
    `perf script`."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if m:
                comm, pid, tid, t, name, fd, cmd = m.groups()
                fd = int(fd, 16) if fd else None
                cmd = int(cmd, 16) if cmd else None
                out.append((float(t) * 1e6, int(pid), int(tid), comm, name, fd, cmd))
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


def sql_call(e):
    """SQLite's locking (`fcntl` record locks) or its WAL write (`pwrite64`)."""
    return e[4] == "sys_enter_pwrite64" or (e[4] == "sys_enter_fcntl" and e[6] in LOCKS)


def placed(e):
    """A config put in place: renamed, or (a new client's) linked in."""
    return "rename" in e[4] or "linkat" in e[4]


def first(window, test):
    return next((e[0] for e in window if test(e)), None)


def push_fd(ev, cs, starts):
    """The configserver's connection to the depot: a push is written in
    several `writev`s (headers, data), an Admin answer in one."""
    several = collections.Counter()
    for start in starts:
        fds = collections.Counter(
            e[5] for e in ev
            if start <= e[0] < start + WINDOW_US and e[1] == cs and e[4] == "sys_enter_writev"
        )
        several.update(fd for fd, n in fds.items() if n > 1)
    return several.most_common(1)[0][0] if several else None


def timeline(ev):
    cs, depot, gen = roles(ev)
    starts, last = [], float("-inf")
    for e in ev:
        if e[1] == gen and e[4] == "sys_enter_writev":
            if e[0] - last > GAP_US:
                starts.append(e[0])
            last = e[0]
    to_depot = push_fd(ev, cs, starts)
    if to_depot is None:
        print("no connection with several writes per action: pushes are not told from answers")
    steps = collections.defaultdict(list)
    counted = 0
    for start in starts:
        window = [e for e in ev if start <= e[0] < start + WINDOW_US]
        read = first(window, lambda e: e[1] == cs and e[4] == "sys_exit_recvfrom")
        if read is None:
            continue
        # Any thread's: a small write runs on the runtime's thread that asked
        # for it, not on the store's own (`native::run_here`).
        sql = [e for e in window if e[1] == cs and sql_call(e) and e[0] > read]
        writes = [e for e in window if e[1] == cs and e[4] == "sys_enter_writev"]
        answer = first(writes, lambda e: e[5] != to_depot)
        push = first(writes, lambda e: e[5] == to_depot)
        # The write's thread: the one that wrote the WAL (a store read thread
        # may take its own locks meanwhile).
        wal_event = next((e for e in sql if e[4] == "sys_enter_pwrite64"), None)
        wal = wal_event[0] if wal_event else None
        sql = [e for e in sql if wal_event and e[2] == wal_event[2]]
        found = {
            "1 the configserver reads the request": read,
            "2 the write's first SQL syscall": sql[0][0] if sql else None,
            "3 its commit (WAL write)": wal,
            "4 its locks released": first(
                sql, lambda e: e[4] == "sys_enter_fcntl" and wal is not None and e[0] > wal
            ),
            "5 Admin response written": answer,
            "6 push written to the depot": push,
            "7 the depot reads it": first(window, lambda e: e[1] == depot and e[4] == "sys_exit_recvfrom"),
            "8 config in place (rename or link)": first(window, lambda e: e[1] == depot and placed(e)),
        }
        # The idle no-op baseline's calls (health checks) reach no depot; an
        # action placed later than WINDOW_US is left out of every step.
        if found["8 config in place (rename or link)"] is None:
            continue
        counted += 1
        for step, at in found.items():
            if at is not None:
                steps[step].append(at - start)
    return len(starts), counted, steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace", help="`perf script -F comm,pid,tid,time,event,trace` output")
    args = parser.parse_args()
    actions, counted, steps = timeline(events(args.trace))
    print(f"calls: {actions}, of them actions placed on the depot within {WINDOW_US} µs: {counted}")
    for step in sorted(steps):
        times = steps[step]
        print(f"{step[2:]:40s} n={len(times):4d}  median {statistics.median(times):7.0f} µs")


if __name__ == "__main__":
    main()
