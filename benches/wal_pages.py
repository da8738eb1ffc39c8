#!/usr/bin/env python3
"""Which B-trees each commit of a running configserver writes: the frames
of its SQLite WAL, grouped by commit, each page mapped to its table or
index with SQLite's `dbstat` (on a copy, so the server is not disturbed).

    pxeconf loadtest --scenario trickle --path new --clients 200 \
        --legacy-depots 0 --depots 1 --trickle-clients 400 &
    sleep 8   # while the trickle runs
    python3 benches/wal_pages.py /dev/shm/pxeconf-loadtest-<run>

Prints how many pages the commits wrote (a histogram) and, over the last
`--last` commits (60), the pages per commit of each B-tree. A checkpoint
empties the WAL: run it mid-trickle, not after the run.
"""

import argparse
import collections
import os
import shutil
import sqlite3
import struct
import tempfile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--last", type=int, default=60)
    args = ap.parse_args()
    wal = open(os.path.join(args.run_dir, "pxeconf.db-wal"), "rb").read()
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "copy.db")
        shutil.copy(os.path.join(args.run_dir, "pxeconf.db"), db)
        with open(db + "-wal", "wb") as f:
            f.write(wal)
        conn = sqlite3.connect(db)
        owner = {page: name for name, page in conn.execute("SELECT name, pageno FROM dbstat")}
        conn.close()
    page_size = struct.unpack(">I", wal[8:12])[0]
    commits, current, off = [], [], 32
    while off + 24 + page_size <= len(wal):
        page, size_after = struct.unpack(">II", wal[off : off + 8])
        current.append(page)
        if size_after:  # a commit frame
            commits.append(current)
            current = []
        off += 24 + page_size
    print(f"page size {page_size}, commits {len(commits)}")
    print("pages per commit:", sorted(collections.Counter(map(len, commits)).items()))
    last = commits[-args.last :]
    per_tree = collections.Counter(owner.get(p, f"page {p}") for c in last for p in c)
    for name, n in per_tree.most_common():
        print(f"{n / len(last):5.2f} per commit  {name}")


if __name__ == "__main__":
    main()
