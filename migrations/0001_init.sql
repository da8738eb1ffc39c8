-- The configserver's inventory and its durable push outbox.

CREATE TABLE depots (
    id          TEXT PRIMARY KEY,
    endpoint    TEXT NOT NULL,
    host_key    TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT ''
);

CREATE TABLE clients (
    id               TEXT PRIMARY KEY,
    hardware_address TEXT NOT NULL DEFAULT '',
    system_uuid      TEXT NOT NULL DEFAULT '',
    ip_address       TEXT NOT NULL DEFAULT '',
    host_key         TEXT NOT NULL DEFAULT ''
);

-- Netboot products, one row per version.
CREATE TABLE products (
    id                  TEXT NOT NULL,
    product_version     TEXT NOT NULL,
    package_version     TEXT NOT NULL,
    pxe_config_template TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (id, product_version, package_version)
);

CREATE TABLE product_on_depots (
    depot_id        TEXT NOT NULL,
    product_id      TEXT NOT NULL,
    product_version TEXT NOT NULL,
    package_version TEXT NOT NULL,
    PRIMARY KEY (depot_id, product_id)
);

CREATE TABLE product_on_clients (
    client_id       TEXT NOT NULL,
    product_id      TEXT NOT NULL,
    action_request  TEXT NOT NULL DEFAULT 'none',
    action_progress TEXT NOT NULL DEFAULT '',
    product_version TEXT NOT NULL DEFAULT '',
    package_version TEXT NOT NULL DEFAULT '',
    -- The revision of the last change: the newest netboot action wins.
    modified        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, product_id)
);
CREATE INDEX product_on_clients_active ON product_on_clients (product_id, client_id)
    WHERE action_request <> 'none';

-- Configs and their default values (JSON array of strings).
CREATE TABLE configs (
    id             TEXT PRIMARY KEY,
    default_values TEXT NOT NULL DEFAULT '[]',
    description    TEXT NOT NULL DEFAULT ''
);

-- Per-object config values (JSON array of strings).
CREATE TABLE config_states (
    object_id TEXT NOT NULL,
    config_id TEXT NOT NULL,
    "values"  TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (object_id, config_id)
);
CREATE INDEX config_states_by_config ON config_states (config_id, object_id);

-- Product property values of a client, or of a depot as the default for its clients.
CREATE TABLE product_property_states (
    object_id   TEXT NOT NULL,
    product_id  TEXT NOT NULL,
    property_id TEXT NOT NULL,
    "values"    TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (object_id, product_id, property_id)
);

-- The outbox: what each depot should hold for each client. A row is owed
-- to its depot while revision > delivered_revision; the newest revision
-- wins, so repeated changes coalesce into one push.
CREATE TABLE pushes (
    client_id          TEXT NOT NULL,
    depot_id           TEXT NOT NULL,
    op                 TEXT NOT NULL CHECK (op IN ('set', 'remove')),
    product_id         TEXT NOT NULL DEFAULT '',
    revision           INTEGER NOT NULL,
    delivered_revision INTEGER NOT NULL DEFAULT 0,
    read_revision      INTEGER NOT NULL DEFAULT 0,
    path               TEXT NOT NULL DEFAULT '',
    attempts           INTEGER NOT NULL DEFAULT 0,
    last_error         TEXT NOT NULL DEFAULT '',
    next_attempt_at    INTEGER,
    updated_at         INTEGER NOT NULL,
    delivered_at       INTEGER,
    read_at            INTEGER,
    PRIMARY KEY (client_id, depot_id)
);
CREATE INDEX pushes_owed ON pushes (depot_id, client_id) WHERE revision > delivered_revision;
CREATE INDEX pushes_by_depot ON pushes (depot_id, client_id);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO meta (key, value) VALUES ('revision', 0);

-- The configs a PXE config depends on, with opsi's defaults.
INSERT INTO configs (id, default_values, description) VALUES
    ('clientconfig.depot.id', '[]', 'The depot a client belongs to'),
    ('clientconfig.configserver.url', '[]', 'The configserver URL the boot image talks to'),
    ('clientconfig.dhcpd.filename', '[]', 'The boot loader the DHCP server hands out; decides BIOS or UEFI'),
    ('opsi-linux-bootimage.append', '[]', 'Extra kernel command line items for the boot image');
