//! Workers and what they can run.
//!
//! Each worker process registers its capabilities (device kind, memory, MLX
//! version) in `workers` and refreshes `last_seen_ms` while it polls. A job
//! may carry [`JobRequirements`]; [`Store::claim_fitting`] only hands a job
//! to a worker that meets them (the filter is part of the claim's SQL, so it
//! is as atomic as the claim itself).

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Store, StoreError, StoreResult, check_name};

/// The kind of device a worker trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cpu,
    Gpu,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Gpu => "gpu",
        }
    }

    pub fn parse(s: &str) -> Option<DeviceKind> {
        match s {
            "cpu" => Some(DeviceKind::Cpu),
            "gpu" => Some(DeviceKind::Gpu),
            _ => None,
        }
    }
}

/// What a job needs from the worker that runs it (`POST /api/jobs`
/// `"requirements"`). Empty: any worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequirements {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_memory_bytes: Option<u64>,
}

impl JobRequirements {
    pub fn is_empty(&self) -> bool {
        self.device.is_none() && self.min_memory_bytes.is_none()
    }

    pub fn validate(&self) -> StoreResult<()> {
        if let Some(m) = self.min_memory_bytes
            && (m == 0 || m > i64::MAX as u64)
        {
            return Err(StoreError::invalid(
                "requirements.min_memory_bytes",
                "must be a positive number of bytes",
            ));
        }
        Ok(())
    }

    /// True if a worker with `caps` may run the job.
    pub fn fits(&self, caps: &WorkerCapabilities) -> bool {
        self.device.is_none_or(|d| d == caps.device)
            && self.min_memory_bytes.is_none_or(|m| m <= caps.memory_bytes)
    }
}

/// What a worker offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCapabilities {
    pub device: DeviceKind,
    pub memory_bytes: u64,
    pub mlx_version: String,
}

/// A registered worker (`GET /api/workers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerInfo {
    pub id: String,
    pub hostname: String,
    pub device: DeviceKind,
    pub memory_bytes: u64,
    pub mlx_version: String,
    pub started_at_ms: i64,
    pub last_seen_ms: i64,
}

impl Store {
    /// Registers (or re-registers) a worker and its capabilities.
    pub async fn register_worker(
        &self,
        id: &str,
        hostname: &str,
        caps: &WorkerCapabilities,
    ) -> StoreResult<()> {
        check_name("worker_id", id, 200)?;
        let now = self.now_ms();
        sqlx::query(
            "INSERT INTO workers (id, hostname, device, memory_bytes, mlx_version, \
             started_at_ms, last_seen_ms) VALUES ($1, $2, $3, $4, $5, $6, $6) \
             ON CONFLICT (id) DO UPDATE SET hostname = $2, device = $3, memory_bytes = $4, \
             mlx_version = $5, started_at_ms = $6, last_seen_ms = $6",
        )
        .bind(id)
        .bind(hostname)
        .bind(caps.device.as_str())
        .bind(caps.memory_bytes.min(i64::MAX as u64) as i64)
        .bind(&caps.mlx_version)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a worker alive now.
    pub async fn worker_heartbeat(&self, id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE workers SET last_seen_ms = $2 WHERE id = $1")
            .bind(id)
            .bind(self.now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Workers, most recently seen first.
    pub async fn list_workers(&self) -> StoreResult<Vec<WorkerInfo>> {
        let rows = sqlx::query(
            "SELECT id, hostname, device, memory_bytes, mlx_version, started_at_ms, \
             last_seen_ms FROM workers ORDER BY last_seen_ms DESC, id LIMIT 1000",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let device: String = r.try_get("device")?;
                Ok(WorkerInfo {
                    id: r.try_get("id")?,
                    hostname: r.try_get("hostname")?,
                    device: DeviceKind::parse(&device).ok_or_else(|| StoreError::Corrupt {
                        entity: "workers",
                        field: "device",
                        message: format!("unknown value {device:?}"),
                    })?,
                    memory_bytes: r.try_get::<i64, _>("memory_bytes")?.max(0) as u64,
                    mlx_version: r.try_get("mlx_version")?,
                    started_at_ms: r.try_get("started_at_ms")?,
                    last_seen_ms: r.try_get("last_seen_ms")?,
                })
            })
            .collect()
    }
}
