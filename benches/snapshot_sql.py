#!/usr/bin/env python3
"""Times the configserver's bundle-load statement (SNAPSHOT_SQL) of several
commits on a copy of a load test's SQLite store, as it is and with a site's
inventory added: other products on the depot with property states, and
localboot products on every client.

    pxeconf loadtest --scenario bulk --path new --depots 1 --legacy-depots 0 \
        --clients 2000 --keep
    python3 benches/snapshot_sql.py /dev/shm/pxeconf-loadtest-<run> 7c8b130 HEAD

Each commit's statement runs on the same connection, interleaved, for one
client and for a batch of 32 (the configserver's batch); the median and the
rows returned are printed. `--temp-store memory` sets the pragma the
configserver sets (docs/BENCHMARKS.md, fifth pass). The rows are those a
depot holds (`Rows::Held`, as `ListPendingBundles` loads them); a push loads
the owed ones with the same statement. This is Python's SQLite, not the one
built into pxeconf: plans of the two versions can differ, so confirm a
change with `pxeconf loadtest`.
"""

import argparse
import json
import re
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

CONFIGS = json.dumps(
    [
        "clientconfig.depot.id",
        "clientconfig.configserver.url",
        "clientconfig.dhcpd.filename",
        "opsi-linux-bootimage.append",
    ]
)


def statement(commit: str) -> str:
    """The snapshot statement of `commit` (rows held by the depot), in
    Python's parameter style."""
    src = subprocess.run(
        ["git", "show", f"{commit}:src/configserver/store/bundle.rs"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout

    def const(name: str) -> str:
        text = src.split(f'const {name}: &str = "', 1)[1].split('";', 1)[0]
        return text.replace('\\"', '"')

    sql = const("SNAPSHOT_SQL")
    if "PUSHED_SQL" in src and "{pushed}" in sql:
        sql = sql.replace("{pushed}", const("PUSHED_SQL"))
    sql = sql.replace("{condition}", "op = 'set' AND read_revision < revision")
    return re.sub(r"\$(\d)", r"?\1", sql)


def add_site(db: sqlite3.Connection, depot: str, products: int, properties: int, per_client: int):
    """Other products on `depot`, each with property states there, and
    `per_client` of them on every client with no action."""
    clients = [r[0] for r in db.execute("SELECT id FROM clients")]
    with db:
        for i in range(products):
            product = f"site-product-{i}"
            db.execute("INSERT INTO products VALUES (?, '1.0', '1', '')", (product,))
            db.execute("INSERT INTO product_on_depots VALUES (?, ?, '1.0', '1')", (depot, product))
            for j in range(properties):
                db.execute(
                    "INSERT INTO product_property_states VALUES (?, ?, ?, ?)",
                    (depot, product, f"property-{j}", json.dumps([f"value-{j}"])),
                )
        for client in clients:
            for i in range(per_client):
                db.execute(
                    "INSERT OR IGNORE INTO product_on_clients (client_id, product_id, action_request)"
                    " VALUES (?, ?, 'none')",
                    (client, f"site-product-{i}"),
                )


def run(db: sqlite3.Connection, depot: str, statements: dict, rounds: int):
    clients = [
        r[0]
        for r in db.execute(
            "SELECT client_id FROM pushes WHERE depot_id = ? AND op = 'set' AND read_revision < revision",
            (depot,),
        )
    ]
    if len(clients) < 64:
        raise SystemExit(
            "too few configs held (delivered, not read) in the run: keep a bulk-only run (--scenario bulk)"
        )
    for batch in (1, 32):
        times = {name: [] for name in statements}
        rows = {}
        for i in range(rounds):
            start = (i * batch) % max(1, len(clients) - batch)
            listed = json.dumps(clients[start : start + batch])
            for name, sql in statements.items():
                t = time.perf_counter()
                got = db.execute(sql, (depot, listed, CONFIGS)).fetchall()
                times[name].append(time.perf_counter() - t)
                rows[name] = len(got)
        line = "  ".join(
            f"{name}: {statistics.median(t) * 1e6:.0f} µs, {rows[name]} rows"
            for name, t in times.items()
        )
        print(f"  {batch:>2} client(s)  {line}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("commits", nargs="+")
    parser.add_argument("--temp-store", default="default", choices=["default", "memory"])
    parser.add_argument("--products", type=int, default=100)
    parser.add_argument("--properties", type=int, default=20)
    parser.add_argument("--per-client", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=600)
    args = parser.parse_args()
    statements = {c: statement(c) for c in args.commits}
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "pxeconf.db"
        source = sqlite3.connect(args.run_dir / "pxeconf.db")
        target = sqlite3.connect(copy)
        source.backup(target)
        source.close()
        target.execute(f"PRAGMA temp_store = {args.temp_store}")
        depot = target.execute("SELECT depot_id FROM pushes LIMIT 1").fetchone()[0]
        print(f"the load test's inventory (temp_store {args.temp_store}):")
        run(target, depot, statements, args.rounds)
        add_site(target, depot, args.products, args.properties, args.per_client)
        print(
            f"with {args.products} other products on the depot, {args.properties} property states each,"
            f" {args.per_client} of them on every client:"
        )
        run(target, depot, statements, args.rounds)
        target.close()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
