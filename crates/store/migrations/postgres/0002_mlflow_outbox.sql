-- Hub schema v2 (PostgreSQL): the MLflow sync outbox. Keep in step with
-- migrations/sqlite/0002_mlflow_outbox.sql (see there for what it means).

CREATE TABLE mlflow_outbox (
    kind               TEXT   NOT NULL,
    entity_id          BIGINT NOT NULL,
    seq                BIGINT NOT NULL DEFAULT 1,
    created_at_ms      BIGINT NOT NULL,
    attempts           BIGINT NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT NOT NULL DEFAULT 0,
    lease_until_ms     BIGINT,
    last_error         TEXT,
    PRIMARY KEY (kind, entity_id),
    CHECK (kind IN ('run', 'version', 'aliases'))
);
CREATE INDEX mlflow_outbox_due ON mlflow_outbox (next_attempt_at_ms);

CREATE TABLE mlflow_links (
    kind          TEXT   NOT NULL,
    entity_id     BIGINT NOT NULL,
    mlflow_id     TEXT   NOT NULL,
    params_synced BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, entity_id)
);

ALTER TABLE metrics ADD COLUMN mlflow_synced BIGINT NOT NULL DEFAULT 0;
CREATE INDEX metrics_mlflow_unsynced ON metrics (run_id) WHERE mlflow_synced = 0;

CREATE FUNCTION hub_mlflow_mark(k TEXT, e BIGINT) RETURNS void AS $$
    INSERT INTO mlflow_outbox (kind, entity_id, created_at_ms)
    VALUES (k, e, (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT)
    ON CONFLICT (kind, entity_id) DO UPDATE SET seq = mlflow_outbox.seq + 1;
$$ LANGUAGE sql;

CREATE FUNCTION hub_mlflow_outbox_run() RETURNS trigger AS $$
BEGIN
    PERFORM hub_mlflow_mark('run', NEW.id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE FUNCTION hub_mlflow_outbox_metric() RETURNS trigger AS $$
BEGIN
    PERFORM hub_mlflow_mark('run', NEW.run_id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE FUNCTION hub_mlflow_outbox_version() RETURNS trigger AS $$
BEGIN
    IF NEW.status IN ('ready', 'archived') AND NEW.status IS DISTINCT FROM OLD.status THEN
        PERFORM hub_mlflow_mark('version', NEW.id);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE FUNCTION hub_mlflow_outbox_alias() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM hub_mlflow_mark('aliases', OLD.model_id);
    ELSE
        PERFORM hub_mlflow_mark('aliases', NEW.model_id);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER mlflow_outbox_run AFTER INSERT OR UPDATE OF status, ended_at_ms ON runs
FOR EACH ROW EXECUTE FUNCTION hub_mlflow_outbox_run();

CREATE TRIGGER mlflow_outbox_metric AFTER INSERT OR UPDATE OF value ON metrics
FOR EACH ROW EXECUTE FUNCTION hub_mlflow_outbox_metric();

CREATE TRIGGER mlflow_outbox_version AFTER UPDATE OF status ON model_versions
FOR EACH ROW EXECUTE FUNCTION hub_mlflow_outbox_version();

CREATE TRIGGER mlflow_outbox_alias AFTER INSERT OR UPDATE OR DELETE ON version_aliases
FOR EACH ROW EXECUTE FUNCTION hub_mlflow_outbox_alias();
