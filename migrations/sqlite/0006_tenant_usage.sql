-- ddrelay credential and tenant store, version 6: usage per tenant, kind
-- and hour (GET /v1/tenants/{t}/usage), what partners bill from.
--
-- One row per tenant, data kind (its short name) and hour (Unix seconds at
-- the hour's start). Replicas add their counts to the same row. Rows older
-- than the retention period are deleted by the relay; a deleted tenant's
-- rows are kept until then (its usage is still billed).

CREATE TABLE tenant_usage (
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    hour BIGINT NOT NULL,
    accepted_items BIGINT NOT NULL DEFAULT 0,
    accepted_bytes BIGINT NOT NULL DEFAULT 0,
    delivered_items BIGINT NOT NULL DEFAULT 0,
    delivered_bytes BIGINT NOT NULL DEFAULT 0,
    dropped_items BIGINT NOT NULL DEFAULT 0,
    dead_lettered_items BIGINT NOT NULL DEFAULT 0,
    aged_out_items BIGINT NOT NULL DEFAULT 0,
    discarded_items BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, kind, hour)
);

CREATE INDEX tenant_usage_hour ON tenant_usage (hour);
