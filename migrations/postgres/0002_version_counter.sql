-- ddrelay credential and tenant store, version 2 (PostgreSQL): a
-- commit-ordered `tenants.version`.
--
-- Replicas poll `SELECT ... WHERE version > <last seen>` (src/tenant.rs,
-- every 2 s). With `MAX(version) + 1` or a plain SEQUENCE, two concurrent
-- transactions can commit out of order: a replica that already saw version
-- 11 would never see the change numbered 10 that committed after it. So
-- every change takes its number from this one-row counter instead: the
-- UPDATE row-locks the counter until the change commits, which means a
-- change numbered N commits before any change can be numbered N + 1, and
-- a rolled-back change gives its number back. Writes to tenants are short
-- single statements, so serialising them on one row costs little (see
-- docs/scale-out.md for the figures).

CREATE TABLE tenant_version (
    id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    v  BIGINT NOT NULL
);

INSERT INTO tenant_version (id, v) SELECT TRUE, COALESCE(MAX(version), 0) FROM tenants;

CREATE FUNCTION ddrelay_next_tenant_version() RETURNS BIGINT
    LANGUAGE sql VOLATILE
    AS $$ UPDATE tenant_version SET v = v + 1 RETURNING v $$;
