-- opsi fidelity (issue 10).

-- Which netboot action is the newest: a sequence of its own, so that a
-- client with several actions boots the most recently set one first.
-- product_on_clients.modified holds its values; it continues above them.
INSERT INTO meta (key, value)
    SELECT 'action_sequence', coalesce(max(modified), 0) FROM product_on_clients;

-- Why a client's config cannot be pushed to this depot until the inventory
-- changes (e.g. its product is not installed there): a terminal failure,
-- kept out of the owed set. Empty when nothing blocks it.
ALTER TABLE pushes ADD COLUMN blocked TEXT NOT NULL DEFAULT '';
-- The template the depot used for the delivered config, and why.
ALTER TABLE pushes ADD COLUMN template TEXT NOT NULL DEFAULT '';
ALTER TABLE pushes ADD COLUMN template_reason TEXT NOT NULL DEFAULT '';
CREATE INDEX pushes_blocked ON pushes (depot_id, product_id) WHERE blocked <> '';

-- A MAC or system UUID belongs to one client (checked on every write).
CREATE INDEX clients_by_mac ON clients (hardware_address) WHERE hardware_address <> '';
CREATE INDEX clients_by_uuid ON clients (system_uuid) WHERE system_uuid <> '';
