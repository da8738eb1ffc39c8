-- Several configservers on one database (issue 12): each depot's pushes
-- are driven by one replica at a time, the holder of its lease. A holder
-- renews its leases every second; a lease not renewed for its time to live
-- (a replica that died or lost the database) is taken over by another.
-- Times are the database's clock, so replicas' clocks need not agree.
CREATE TABLE depot_leases (
    depot_id   TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
