-- Hub schema v3 (PostgreSQL): worker capabilities and job requirements. Keep
-- in step with migrations/sqlite/0003_workers.sql.
--
-- Each worker process registers itself (device kind, memory, MLX version) and
-- refreshes last_seen_ms while it polls. A job may require a device kind
-- and/or a minimum of memory; `claim` hands it only to a worker that fits.

CREATE TABLE workers (
    id            TEXT   PRIMARY KEY,
    hostname      TEXT   NOT NULL DEFAULT '',
    device        TEXT   NOT NULL,
    memory_bytes  BIGINT NOT NULL,
    mlx_version   TEXT   NOT NULL DEFAULT 'unknown',
    started_at_ms BIGINT NOT NULL,
    last_seen_ms  BIGINT NOT NULL,
    CHECK (device IN ('cpu', 'gpu')),
    CHECK (memory_bytes >= 0)
);

ALTER TABLE training_jobs ADD COLUMN required_device TEXT
    CHECK (required_device IS NULL OR required_device IN ('cpu', 'gpu'));
ALTER TABLE training_jobs ADD COLUMN min_memory_bytes BIGINT
    CHECK (min_memory_bytes IS NULL OR min_memory_bytes >= 0);
