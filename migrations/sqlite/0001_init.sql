-- ddrelay credential and tenant store, version 1 (SQLite).
-- Every secret column holds a value sealed with the master key
-- (src/secret.rs); the database never sees a plaintext token or key.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
);

CREATE TABLE tenants (
    id                TEXT PRIMARY KEY NOT NULL,
    state             TEXT NOT NULL,
    reason            TEXT,
    domain            TEXT,
    org_id            TEXT,
    org_name          TEXT,
    client_id         TEXT,
    scopes            TEXT,
    access_token      BLOB,
    access_expires_at INTEGER,
    refresh_token     BLOB,
    api_key           BLOB,
    api_key_id        TEXT,
    api_key_last4     TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    connected_at      INTEGER,
    version           INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX tenants_org_id ON tenants (org_id);
CREATE INDEX tenants_version ON tenants (version);

CREATE TABLE oauth_flows (
    state_hash TEXT PRIMARY KEY NOT NULL,
    tenant     TEXT NOT NULL,
    sealed     BLOB NOT NULL,
    web_host   TEXT NOT NULL,
    domain     TEXT,
    client_id  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE INDEX oauth_flows_expires_at ON oauth_flows (expires_at);
