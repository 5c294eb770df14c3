-- Hub schema v2 (SQLite): the MLflow sync outbox. Keep in step with
-- migrations/postgres/0002_mlflow_outbox.sql.
--
-- Triggers mark an entity "dirty" in the same transaction that changes it, by
-- any path; a background task (crate::mlflow) pushes the entity's current
-- state to MLflow and deletes the mark if nothing changed meanwhile (`seq`).
-- Kinds: 'run' (a run, its params, status and metrics), 'version' (a model
-- version), 'aliases' (the aliases of a model; entity_id is the model id).

CREATE TABLE mlflow_outbox (
    kind               TEXT    NOT NULL,
    entity_id          INTEGER NOT NULL,
    -- bumped at every change: the drainer deletes only the change it pushed
    seq                INTEGER NOT NULL DEFAULT 1,
    created_at_ms      INTEGER NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL DEFAULT 0,
    -- one drainer at a time per entry (several hub processes may drain)
    lease_until_ms     INTEGER,
    last_error         TEXT,
    PRIMARY KEY (kind, entity_id),
    CHECK (kind IN ('run', 'version', 'aliases'))
);
CREATE INDEX mlflow_outbox_due ON mlflow_outbox (next_attempt_at_ms);

-- What each hub entity is called in MLflow. kind: 'experiment' (entity: a
-- model), 'run', 'version' (mlflow_id: "<registered model name>/<version>").
CREATE TABLE mlflow_links (
    kind          TEXT    NOT NULL,
    entity_id     INTEGER NOT NULL,
    mlflow_id     TEXT    NOT NULL,
    params_synced INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, entity_id)
);

ALTER TABLE metrics ADD COLUMN mlflow_synced INTEGER NOT NULL DEFAULT 0;
CREATE INDEX metrics_mlflow_unsynced ON metrics (run_id) WHERE mlflow_synced = 0;

CREATE TRIGGER mlflow_outbox_run_insert AFTER INSERT ON runs
BEGIN
    INSERT INTO mlflow_outbox (kind, entity_id, created_at_ms)
    VALUES ('run', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER))
    ON CONFLICT (kind, entity_id) DO UPDATE SET seq = seq + 1;
END;

CREATE TRIGGER mlflow_outbox_run_update AFTER UPDATE OF status, ended_at_ms ON runs
BEGIN
    INSERT INTO mlflow_outbox (kind, entity_id, created_at_ms)
    VALUES ('run', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER))
    ON CONFLICT (kind, entity_id) DO UPDATE SET seq = seq + 1;
END;

CREATE TRIGGER mlflow_outbox_metric_insert AFTER INSERT ON metrics
BEGIN
    INSERT INTO mlflow_outbox (kind, entity_id, created_at_ms)
    VALUES ('run', NEW.run_id, CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER))
    ON CONFLICT (kind, entity_id) DO UPDATE SET seq = seq + 1;
END;

CREATE TRIGGER mlflow_outbox_metric_update AFTER UPDATE OF value ON metrics
BEGIN
    INSERT INTO mlflow_outbox (kind, entity_id, created_at_ms)
    VALUES ('run', NEW.run_id, CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER))
    ON CONFLICT (kind, entity_id) DO UPDATE SET seq = seq + 1;
END;

CREATE TRIGGER mlflow_outbox_version_status AFTER UPDATE OF status ON model_versions
WHEN NEW.status IN ('ready', 'archived')
BEGIN
    INSERT INTO mlflow_outbox (kind, entity_id, created_at_ms)
    VALUES ('version', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER))
    ON CONFLICT (kind, entity_id) DO UPDATE SET seq = seq + 1;
END;

CREATE TRIGGER mlflow_outbox_alias_insert AFTER INSERT ON version_aliases
BEGIN
    INSERT INTO mlflow_outbox (kind, entity_id, created_at_ms)
    VALUES ('aliases', NEW.model_id, CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER))
    ON CONFLICT (kind, entity_id) DO UPDATE SET seq = seq + 1;
END;

CREATE TRIGGER mlflow_outbox_alias_update AFTER UPDATE ON version_aliases
BEGIN
    INSERT INTO mlflow_outbox (kind, entity_id, created_at_ms)
    VALUES ('aliases', NEW.model_id, CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER))
    ON CONFLICT (kind, entity_id) DO UPDATE SET seq = seq + 1;
END;

CREATE TRIGGER mlflow_outbox_alias_delete AFTER DELETE ON version_aliases
BEGIN
    INSERT INTO mlflow_outbox (kind, entity_id, created_at_ms)
    VALUES ('aliases', OLD.model_id, CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER))
    ON CONFLICT (kind, entity_id) DO UPDATE SET seq = seq + 1;
END;
