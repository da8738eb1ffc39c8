-- The one-time guarantee under faults (issue 8).
--
-- The store's identity: a random 128-bit id made with the database (a new
-- database is a new epoch; a restored copy keeps its epoch). Depots keep
-- revision floors per epoch, so a new database starts a fresh sequence.
CREATE TABLE identity (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO identity (key, value) VALUES ('epoch', lower(hex(randomblob(16))));

-- A read whose files the depot could not delete yet (it defused them with a
-- local-boot config and keeps retrying the delete).
ALTER TABLE pushes ADD COLUMN read_files_present INTEGER NOT NULL DEFAULT 0;
