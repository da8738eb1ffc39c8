-- Counting held configs per depot (ListDepots) without reading every push
-- row: the configs delivered and not read, by depot, in a partial index
-- that the count scans alone (as `pushes_owed` serves the owed count).
CREATE INDEX pushes_held ON pushes (depot_id)
    WHERE op = 'set' AND delivered_revision >= revision AND read_revision < revision;
