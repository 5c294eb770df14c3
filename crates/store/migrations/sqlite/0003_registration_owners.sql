-- Hub schema v3 (SQLite): who is registering a version. Keep in step with
-- migrations/postgres/0003_registration_owners.sql.
--
-- `owner` is `<host>/<pid>-<uuid>` of the hub process that registers the
-- version (see crate::owner): start-up recovery fails a `registering` version
-- whose owner process is dead at once, instead of after the stale window.
CREATE TABLE registration_owners (
    version_id INTEGER PRIMARY KEY REFERENCES model_versions (id) ON DELETE CASCADE,
    owner      TEXT    NOT NULL
);
