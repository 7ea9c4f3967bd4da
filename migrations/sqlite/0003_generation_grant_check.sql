-- ddrelay credential and tenant store, version 3: the connection
-- generation, the last confirmation of the tenant's grant, and a
-- machine-readable code for the tenant's `reason`.
--
-- `generation` grows whenever the data accepted so far may no longer go
-- where the tenant now points: a disconnect (DELETE /v1/tenants/{t}) and a
-- reconnect to another Datadog org or site. Every queued record carries the
-- generation it was accepted for, and delivery sends a record only while it
-- is the tenant's current one (src/pipeline/send.rs), so data never reaches
-- an org it was not accepted for, whichever replica holds it.
--
-- `grant_checked_at` (Unix seconds) is when Datadog last confirmed the
-- tenant's grant (a refresh it answered); the grant check
-- (src/tenant/grant.rs) confirms each connected tenant at least every
-- `oauth.grant_check_interval`.
--
-- `reason_code` says why a tenant is not connected in a word partners'
-- code can match (`grant_revoked`, `key_conflict`, `site_not_allowed`, ...,
-- see store::ReasonCode); `reason` stays the sentence for people.

ALTER TABLE tenants ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN grant_checked_at BIGINT;
ALTER TABLE tenants ADD COLUMN reason_code TEXT;
