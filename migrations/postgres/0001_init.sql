-- The configserver's inventory and its durable push outbox, in PostgreSQL.
-- The same tables as the SQLite schema (migrations/0001–0003, described in
-- docs/SCHEMA.md), with BIGINT for SQLite's INTEGER.

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
CREATE INDEX clients_by_mac ON clients (hardware_address) WHERE hardware_address <> '';
CREATE INDEX clients_by_uuid ON clients (system_uuid) WHERE system_uuid <> '';

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
    modified        BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, product_id)
);
CREATE INDEX product_on_clients_active ON product_on_clients (product_id, client_id)
    WHERE action_request <> 'none';

CREATE TABLE configs (
    id             TEXT PRIMARY KEY,
    default_values TEXT NOT NULL DEFAULT '[]',
    description    TEXT NOT NULL DEFAULT ''
);

CREATE TABLE config_states (
    object_id TEXT NOT NULL,
    config_id TEXT NOT NULL,
    "values"  TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (object_id, config_id)
);
CREATE INDEX config_states_by_config ON config_states (config_id, object_id);

CREATE TABLE product_property_states (
    object_id   TEXT NOT NULL,
    product_id  TEXT NOT NULL,
    property_id TEXT NOT NULL,
    "values"    TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (object_id, product_id, property_id)
);

CREATE TABLE pushes (
    client_id          TEXT NOT NULL,
    depot_id           TEXT NOT NULL,
    op                 TEXT NOT NULL CHECK (op IN ('set', 'remove')),
    product_id         TEXT NOT NULL DEFAULT '',
    revision           BIGINT NOT NULL,
    delivered_revision BIGINT NOT NULL DEFAULT 0,
    read_revision      BIGINT NOT NULL DEFAULT 0,
    path               TEXT NOT NULL DEFAULT '',
    attempts           BIGINT NOT NULL DEFAULT 0,
    last_error         TEXT NOT NULL DEFAULT '',
    next_attempt_at    BIGINT,
    updated_at         BIGINT NOT NULL,
    delivered_at       BIGINT,
    read_at            BIGINT,
    read_files_present BIGINT NOT NULL DEFAULT 0,
    blocked            TEXT NOT NULL DEFAULT '',
    template           TEXT NOT NULL DEFAULT '',
    template_reason    TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (client_id, depot_id)
);
CREATE INDEX pushes_owed ON pushes (depot_id, client_id) WHERE revision > delivered_revision;
CREATE INDEX pushes_by_depot ON pushes (depot_id, client_id);
CREATE INDEX pushes_blocked ON pushes (depot_id, product_id) WHERE blocked <> '';

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('revision', 0), ('action_sequence', 0);

CREATE TABLE identity (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO identity (key, value) VALUES ('epoch', replace(gen_random_uuid()::text, '-', ''));

INSERT INTO configs (id, default_values, description) VALUES
    ('clientconfig.depot.id', '[]', 'The depot a client belongs to'),
    ('clientconfig.configserver.url', '[]', 'The configserver URL the boot image talks to'),
    ('clientconfig.dhcpd.filename', '[]', 'The boot loader the DHCP server hands out; decides BIOS or UEFI'),
    ('opsi-linux-bootimage.append', '[]', 'Extra kernel command line items for the boot image');

-- SQLite's JSON idioms, so that the store runs one SQL text on both
-- engines: lists and rows travel as one JSON text parameter.
--
-- json_each(text): one row per element of a JSON array, `key` its index
-- from 0, `value` a string element unquoted or any other element as JSON
-- text — what SQLite's json_each gives for an array.
CREATE FUNCTION json_each(list text) RETURNS TABLE (key bigint, value text)
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT e.ord - 1,
           CASE jsonb_typeof(e.v) WHEN 'string' THEN e.v #>> '{}' ELSE e.v::text END
    FROM jsonb_array_elements(list::jsonb) WITH ORDINALITY AS e(v, ord)
$$;

-- text ->> integer: the i-th element of a JSON array held as text, as
-- text (SQLite's ->> on a JSON text).
CREATE FUNCTION json_text_at(doc text, i integer) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT (doc::jsonb) ->> i
$$;
CREATE OPERATOR ->> (LEFTARG = text, RIGHTARG = integer, FUNCTION = json_text_at);
