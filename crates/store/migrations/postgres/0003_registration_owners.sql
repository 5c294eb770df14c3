-- Hub schema v3 (PostgreSQL): who is registering a version. Keep in step with
-- migrations/sqlite/0003_registration_owners.sql (see there for what it means).
CREATE TABLE registration_owners (
    version_id BIGINT PRIMARY KEY REFERENCES model_versions (id) ON DELETE CASCADE,
    owner      TEXT   NOT NULL
);
