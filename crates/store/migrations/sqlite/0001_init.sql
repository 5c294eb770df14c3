-- Hub schema v1 (SQLite). Keep in step with migrations/postgres/0001_init.sql:
-- same tables, columns, constraints and triggers; only the dialect differs.
-- Types: INTEGER, TEXT, REAL, BLOB only. Timestamps are unix milliseconds,
-- JSON is TEXT.

CREATE TABLE models (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    description   TEXT    NOT NULL DEFAULT '',
    tags          TEXT    NOT NULL DEFAULT '[]',
    next_version  INTEGER NOT NULL DEFAULT 1,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

CREATE TABLE datasets (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    format        TEXT    NOT NULL,
    splits        TEXT    NOT NULL DEFAULT '{}',
    content_hash  TEXT    NOT NULL,
    location      TEXT    NOT NULL,
    size_bytes    INTEGER NOT NULL DEFAULT 0,
    description   TEXT    NOT NULL DEFAULT '',
    created_at_ms INTEGER NOT NULL,
    UNIQUE (name, version),
    CHECK (version >= 1),
    CHECK (size_bytes >= 0)
);

-- Per-name version counter for datasets (atomic numbering by upsert).
CREATE TABLE dataset_counters (
    name         TEXT    PRIMARY KEY,
    next_version INTEGER NOT NULL
);

CREATE TABLE model_versions (
    id              INTEGER PRIMARY KEY,
    model_id        INTEGER NOT NULL REFERENCES models (id) ON DELETE RESTRICT,
    number          INTEGER NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'registering',
    description     TEXT    NOT NULL DEFAULT '',
    tags            TEXT    NOT NULL DEFAULT '[]',
    format          TEXT    NOT NULL,
    architecture    TEXT,
    parameter_count INTEGER,
    dtype           TEXT,
    quantization    TEXT,
    size_bytes      INTEGER NOT NULL DEFAULT 0,
    artifact_uri    TEXT,
    base_version_id INTEGER REFERENCES model_versions (id) ON DELETE RESTRICT,
    lineage         TEXT    NOT NULL DEFAULT '{}',
    status_message  TEXT,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL,
    ready_at_ms     INTEGER,
    UNIQUE (model_id, number),
    UNIQUE (id, model_id),
    CHECK (number >= 1),
    CHECK (size_bytes >= 0),
    CHECK (status IN ('registering', 'ready', 'failed', 'archived'))
);
CREATE INDEX model_versions_model ON model_versions (model_id, number);

CREATE TABLE version_files (
    version_id INTEGER NOT NULL REFERENCES model_versions (id) ON DELETE CASCADE,
    path       TEXT    NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256     TEXT    NOT NULL,
    PRIMARY KEY (version_id, path),
    CHECK (size_bytes >= 0),
    CHECK (length(sha256) = 64)
);
CREATE INDEX version_files_sha256 ON version_files (sha256);

CREATE TABLE version_aliases (
    model_id      INTEGER NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    alias         TEXT    NOT NULL,
    version_id    INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (model_id, alias),
    -- an alias can only point at a version of the same model
    FOREIGN KEY (version_id, model_id) REFERENCES model_versions (id, model_id) ON DELETE CASCADE
);
CREATE INDEX version_aliases_version ON version_aliases (version_id);

CREATE TABLE training_jobs (
    id                  INTEGER PRIMARY KEY,
    kind                TEXT    NOT NULL DEFAULT 'train',
    state               TEXT    NOT NULL DEFAULT 'queued',
    priority            INTEGER NOT NULL DEFAULT 0,
    config              TEXT    NOT NULL DEFAULT '{}',
    base_version_id     INTEGER REFERENCES model_versions (id) ON DELETE RESTRICT,
    dataset_id          INTEGER REFERENCES datasets (id) ON DELETE RESTRICT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    max_attempts        INTEGER NOT NULL DEFAULT 3,
    lease_owner         TEXT,
    lease_expires_at_ms INTEGER,
    cancel_requested    INTEGER NOT NULL DEFAULT 0,
    progress            REAL    NOT NULL DEFAULT 0,
    error               TEXT,
    result_version_id   INTEGER REFERENCES model_versions (id) ON DELETE SET NULL,
    created_at_ms       INTEGER NOT NULL,
    updated_at_ms       INTEGER NOT NULL,
    started_at_ms       INTEGER,
    finished_at_ms      INTEGER,
    CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    CHECK (max_attempts >= 1),
    CHECK (attempts >= 0),
    CHECK (cancel_requested IN (0, 1)),
    CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_expires_at_ms IS NOT NULL))
);
CREATE INDEX training_jobs_queue ON training_jobs (state, priority, id);

CREATE TABLE runs (
    id               INTEGER PRIMARY KEY,
    job_id           INTEGER REFERENCES training_jobs (id) ON DELETE CASCADE,
    model_version_id INTEGER REFERENCES model_versions (id) ON DELETE CASCADE,
    name             TEXT    NOT NULL DEFAULT '',
    params           TEXT    NOT NULL DEFAULT '{}',
    status           TEXT    NOT NULL DEFAULT 'running',
    started_at_ms    INTEGER NOT NULL,
    ended_at_ms      INTEGER,
    CHECK (status IN ('running', 'finished', 'failed', 'killed'))
);
CREATE INDEX runs_job ON runs (job_id);
CREATE INDEX runs_version ON runs (model_version_id);

CREATE TABLE metrics (
    run_id       INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key          TEXT    NOT NULL,
    step         INTEGER NOT NULL,
    value        REAL    NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    PRIMARY KEY (run_id, key, step)
);

CREATE TABLE artifacts (
    sha256        TEXT    PRIMARY KEY,
    size_bytes    INTEGER NOT NULL,
    tier          TEXT    NOT NULL DEFAULT 'active',
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    CHECK (tier IN ('active', 'archive')),
    CHECK (size_bytes >= 0),
    CHECK (length(sha256) = 64)
);

-- A version is immutable once it has been `ready`: its content columns never
-- change again, and only these status moves exist:
--   registering -> ready | failed,  ready -> archived,  archived -> ready,
--   failed -> archived.
CREATE TRIGGER model_versions_immutable
BEFORE UPDATE ON model_versions
FOR EACH ROW
WHEN OLD.status IN ('ready', 'archived', 'failed') AND (
       NEW.model_id IS NOT OLD.model_id
    OR NEW.number IS NOT OLD.number
    OR NEW.format IS NOT OLD.format
    OR NEW.architecture IS NOT OLD.architecture
    OR NEW.parameter_count IS NOT OLD.parameter_count
    OR NEW.dtype IS NOT OLD.dtype
    OR NEW.quantization IS NOT OLD.quantization
    OR NEW.size_bytes IS NOT OLD.size_bytes
    OR NEW.artifact_uri IS NOT OLD.artifact_uri
    OR NEW.base_version_id IS NOT OLD.base_version_id
    OR NEW.lineage IS NOT OLD.lineage)
BEGIN
    SELECT RAISE(ABORT, 'hub: model version is immutable');
END;

CREATE TRIGGER model_versions_status
BEFORE UPDATE OF status ON model_versions
FOR EACH ROW
WHEN NEW.status IS NOT OLD.status AND NOT (
       (OLD.status = 'registering' AND NEW.status IN ('ready', 'failed'))
    OR (OLD.status = 'ready' AND NEW.status = 'archived')
    OR (OLD.status = 'archived' AND NEW.status = 'ready')
    OR (OLD.status = 'failed' AND NEW.status = 'archived'))
BEGIN
    SELECT RAISE(ABORT, 'hub: illegal model version status transition');
END;

CREATE TRIGGER version_files_immutable_insert
BEFORE INSERT ON version_files
FOR EACH ROW
WHEN (SELECT status FROM model_versions WHERE id = NEW.version_id) <> 'registering'
BEGIN
    SELECT RAISE(ABORT, 'hub: model version is immutable');
END;

CREATE TRIGGER version_files_immutable_update
BEFORE UPDATE ON version_files
FOR EACH ROW
WHEN (SELECT status FROM model_versions WHERE id = OLD.version_id) <> 'registering'
BEGIN
    SELECT RAISE(ABORT, 'hub: model version is immutable');
END;

CREATE TRIGGER version_files_immutable_delete
BEFORE DELETE ON version_files
FOR EACH ROW
WHEN (SELECT status FROM model_versions WHERE id = OLD.version_id) = 'ready'
BEGIN
    SELECT RAISE(ABORT, 'hub: model version is immutable');
END;
