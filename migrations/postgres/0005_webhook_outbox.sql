-- ddrelay credential and tenant store, version 5: the lifecycle webhook
-- outbox (src/store/outbox.rs, delivered by src/webhooks.rs).
--
-- One row per tenant lifecycle event (tenant.connected,
-- tenant.reauth_required, tenant.disconnected), inserted in the same
-- transaction as the state change it reports, so a committed state change
-- always has its event. `body` is the JSON sent, fixed when the row is
-- written: every retry sends the same `id` and fields. A row is deleted
-- once the partner answered 2xx; rows older than the outbox's retention
-- are deleted undelivered (counted).
--
-- Delivery is in order per tenant: only a tenant's lowest `seq` is ever
-- claimed. A replica claims a row by writing its id to `claimed_by` and
-- a lease end to `claimed_until` (Unix ms); a crashed replica's claims
-- are taken over once the lease has passed. Times are Unix milliseconds.

CREATE TABLE webhook_outbox (
    seq             BIGSERIAL PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    tenant          TEXT NOT NULL,
    kind            TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    claimed_by      TEXT,
    claimed_until   BIGINT,
    last_error      TEXT
);

CREATE INDEX webhook_outbox_tenant_seq ON webhook_outbox (tenant, seq);
CREATE INDEX webhook_outbox_created_at ON webhook_outbox (created_at);
