-- ddrelay credential and tenant store, version 2 (SQLite): kept in step
-- with migrations/postgres/0002_version_counter.sql.
--
-- PostgreSQL needs a counter row so that `tenants.version` is gap-free and
-- commit-ordered across replicas. SQLite serves one process and takes its
-- write lock at the start of every writing statement, so
-- `(SELECT MAX(version) + 1 FROM tenants)` evaluated inside the write is
-- already gap-free and ordered: nothing to add but the index it reads.

CREATE INDEX IF NOT EXISTS tenants_version ON tenants (version);
