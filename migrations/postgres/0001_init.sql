-- ddrelay credential and tenant store, version 1 (PostgreSQL).
-- Every secret column holds a value sealed with the master key
-- (src/secret.rs); the database never sees a plaintext token or key.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value BYTEA NOT NULL
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
    access_token      BYTEA,
    access_expires_at BIGINT,
    refresh_token     BYTEA,
    api_key           BYTEA,
    api_key_id        TEXT,
    api_key_last4     TEXT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    connected_at      BIGINT,
    version           BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX tenants_org_id ON tenants (org_id);
CREATE INDEX tenants_version ON tenants (version);

CREATE TABLE oauth_flows (
    state_hash TEXT PRIMARY KEY NOT NULL,
    tenant     TEXT NOT NULL,
    sealed     BYTEA NOT NULL,
    web_host   TEXT NOT NULL,
    domain     TEXT,
    client_id  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX oauth_flows_expires_at ON oauth_flows (expires_at);
