-- ddrelay credential and tenant store, version 4: the tags a customer
-- attaches to the integration's data (PUT /v1/tenants/{t}/tags).
--
-- `tags` holds the tenant's tags, normalised by Datadog's tag rules
-- (src/tags.rs), as a JSON array of strings; NULL (every tenant before
-- this version) means none. Setting them changes the row's `version`, so
-- replicas sharing the store pick them up at their next sync. They are
-- not secret: not sealed.

ALTER TABLE tenants ADD COLUMN tags TEXT;
