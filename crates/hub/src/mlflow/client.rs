//! A small client for the MLflow tracking server's REST API 2.0: only the
//! calls the sync needs.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

/// Limits of `runs/log-batch` (per request).
pub const MAX_BATCH_METRICS: usize = 1000;
pub const MAX_BATCH_PARAMS: usize = 100;
pub const MAX_BATCH_TAGS: usize = 100;
/// MLflow's limit on a param value's length.
pub const MAX_PARAM_VALUE: usize = 6000;

#[derive(Debug, thiserror::Error)]
pub enum MlflowError {
    /// No answer (connection refused, timeout, …): try again later.
    #[error("MLflow unreachable: {0}")]
    Unreachable(String),
    /// MLflow answered with an error.
    #[error("MLflow {endpoint}: HTTP {status} {code}: {message}")]
    Api {
        endpoint: &'static str,
        status: u16,
        code: String,
        message: String,
    },
    /// MLflow answered something this client does not understand.
    #[error("MLflow {endpoint}: unexpected answer: {message}")]
    Protocol {
        endpoint: &'static str,
        message: String,
    },
}

impl MlflowError {
    /// MLflow's error code, when it answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            MlflowError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some("RESOURCE_DOES_NOT_EXIST")
    }

    pub fn is_already_exists(&self) -> bool {
        self.code() == Some("RESOURCE_ALREADY_EXISTS")
    }

    /// MLflow refused the request itself (retrying it cannot help).
    pub fn is_invalid(&self) -> bool {
        self.code() == Some("INVALID_PARAMETER_VALUE")
    }
}

pub type MlflowResult<T> = Result<T, MlflowError>;

/// One metric value for `log-batch`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricValue {
    pub key: String,
    pub value: f64,
    pub timestamp_ms: i64,
    pub step: i64,
}

/// An MLflow tracking server.
#[derive(Debug, Clone)]
pub struct MlflowClient {
    http: reqwest::Client,
    /// `<uri>/api/2.0/mlflow`
    base: String,
}

#[derive(Deserialize)]
struct ExperimentId {
    experiment_id: String,
}

impl MlflowClient {
    /// A client for the server at `uri` (`http://host:port`), with a timeout
    /// per request so a slow server only delays the sync.
    pub fn new(uri: &str, timeout: Duration) -> MlflowResult<MlflowClient> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| MlflowError::Unreachable(e.to_string()))?;
        Ok(MlflowClient {
            http,
            base: format!("{}/api/2.0/mlflow", uri.trim_end_matches('/')),
        })
    }

    async fn send(
        &self,
        endpoint: &'static str,
        req: reqwest::RequestBuilder,
    ) -> MlflowResult<Value> {
        let resp = req
            .send()
            .await
            .map_err(|e| MlflowError::Unreachable(format!("{endpoint}: {e}")))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| MlflowError::Unreachable(format!("{endpoint}: {e}")))?;
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|e| MlflowError::Protocol {
                endpoint,
                message: e.to_string(),
            });
        }
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let code = body["error_code"].as_str().unwrap_or("").to_string();
        let message = body["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| text.chars().take(200).collect());
        if code.is_empty() && (status.is_server_error() || status.as_u16() == 429) {
            return Err(MlflowError::Unreachable(format!(
                "{endpoint}: HTTP {status}: {message}"
            )));
        }
        Err(MlflowError::Api {
            endpoint,
            status: status.as_u16(),
            code,
            message,
        })
    }

    async fn post(&self, endpoint: &'static str, body: Value) -> MlflowResult<Value> {
        let req = self
            .http
            .post(format!("{}/{endpoint}", self.base))
            .json(&body);
        self.send(endpoint, req).await
    }

    async fn get(&self, endpoint: &'static str, query: &[(&str, &str)]) -> MlflowResult<Value> {
        let req = self
            .http
            .get(format!("{}/{endpoint}", self.base))
            .query(query);
        self.send(endpoint, req).await
    }

    /// The id of the experiment called `name`, created when missing.
    pub async fn ensure_experiment(
        &self,
        name: &str,
        tags: &[(String, String)],
    ) -> MlflowResult<String> {
        match self
            .get("experiments/get-by-name", &[("experiment_name", name)])
            .await
        {
            Ok(v) => {
                if let Some(id) = v["experiment"]["experiment_id"].as_str() {
                    return Ok(id.to_string());
                }
                return Err(MlflowError::Protocol {
                    endpoint: "experiments/get-by-name",
                    message: "no experiment_id".into(),
                });
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let created = self
            .post(
                "experiments/create",
                json!({ "name": name, "tags": tag_list(tags) }),
            )
            .await;
        match created {
            Ok(v) => serde_json::from_value::<ExperimentId>(v)
                .map(|e| e.experiment_id)
                .map_err(|e| MlflowError::Protocol {
                    endpoint: "experiments/create",
                    message: e.to_string(),
                }),
            // Another drainer created it meanwhile.
            Err(e) if e.is_already_exists() => {
                let v = self
                    .get("experiments/get-by-name", &[("experiment_name", name)])
                    .await?;
                v["experiment"]["experiment_id"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| MlflowError::Protocol {
                        endpoint: "experiments/get-by-name",
                        message: "no experiment_id".into(),
                    })
            }
            Err(e) => Err(e),
        }
    }

    /// The id of a run of `experiment_id` carrying tag `key = value`.
    pub async fn find_run_by_tag(
        &self,
        experiment_id: &str,
        key: &str,
        value: &str,
    ) -> MlflowResult<Option<String>> {
        let v = self
            .post(
                "runs/search",
                json!({
                    "experiment_ids": [experiment_id],
                    "filter": format!("tags.`{key}` = '{}'", value.replace('\'', "")),
                    "max_results": 1,
                }),
            )
            .await?;
        Ok(v["runs"][0]["info"]["run_id"].as_str().map(str::to_string))
    }

    /// Creates a run; returns its id.
    pub async fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        start_time_ms: i64,
        tags: &[(String, String)],
    ) -> MlflowResult<String> {
        let v = self
            .post(
                "runs/create",
                json!({
                    "experiment_id": experiment_id,
                    "run_name": run_name,
                    "start_time": start_time_ms,
                    "tags": tag_list(tags),
                }),
            )
            .await?;
        v["run"]["info"]["run_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| MlflowError::Protocol {
                endpoint: "runs/create",
                message: "no run_id".into(),
            })
    }

    /// `runs/log-batch`; the caller keeps within the limits.
    pub async fn log_batch(
        &self,
        run_id: &str,
        metrics: &[MetricValue],
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> MlflowResult<()> {
        debug_assert!(metrics.len() <= MAX_BATCH_METRICS);
        debug_assert!(params.len() <= MAX_BATCH_PARAMS && tags.len() <= MAX_BATCH_TAGS);
        let metrics: Vec<Value> = metrics
            .iter()
            .map(|m| {
                json!({"key": m.key, "value": m.value, "timestamp": m.timestamp_ms, "step": m.step})
            })
            .collect();
        let params: Vec<Value> = params
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        self.post(
            "runs/log-batch",
            json!({"run_id": run_id, "metrics": metrics, "params": params, "tags": tag_list(tags)}),
        )
        .await?;
        Ok(())
    }

    /// Sets a run's status (`RUNNING`, `FINISHED`, `FAILED`, `KILLED`).
    pub async fn update_run(
        &self,
        run_id: &str,
        status: &str,
        end_time_ms: Option<i64>,
    ) -> MlflowResult<()> {
        let mut body = json!({"run_id": run_id, "status": status});
        if let Some(t) = end_time_ms {
            body["end_time"] = json!(t);
        }
        self.post("runs/update", body).await?;
        Ok(())
    }

    /// Creates the registered model `name` unless it exists.
    pub async fn ensure_registered_model(&self, name: &str, description: &str) -> MlflowResult<()> {
        match self
            .post(
                "registered-models/create",
                json!({"name": name, "description": description}),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_already_exists() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The version of registered model `name` carrying tag `key = value`.
    pub async fn find_model_version_by_tag(
        &self,
        name: &str,
        key: &str,
        value: &str,
    ) -> MlflowResult<Option<String>> {
        let filter = format!(
            "name = '{}' and tags.`{key}` = '{}'",
            name.replace('\'', ""),
            value.replace('\'', "")
        );
        let v = self
            .get("model-versions/search", &[("filter", filter.as_str())])
            .await?;
        Ok(v["model_versions"][0]["version"]
            .as_str()
            .map(str::to_string))
    }

    /// Registers a new version; returns its number.
    pub async fn create_model_version(
        &self,
        name: &str,
        source: &str,
        run_id: Option<&str>,
        description: &str,
        tags: &[(String, String)],
    ) -> MlflowResult<String> {
        let mut body = json!({
            "name": name,
            "source": source,
            "description": description,
            "tags": tag_list(tags),
        });
        if let Some(r) = run_id {
            body["run_id"] = json!(r);
        }
        let v = self.post("model-versions/create", body).await?;
        v["model_version"]["version"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| MlflowError::Protocol {
                endpoint: "model-versions/create",
                message: "no version".into(),
            })
    }

    /// Sets a tag on a registered model version.
    pub async fn set_model_version_tag(
        &self,
        name: &str,
        version: &str,
        key: &str,
        value: &str,
    ) -> MlflowResult<()> {
        self.post(
            "model-versions/set-tag",
            json!({"name": name, "version": version, "key": key, "value": value}),
        )
        .await?;
        Ok(())
    }

    /// The aliases of a registered model: (alias, version).
    pub async fn aliases(&self, name: &str) -> MlflowResult<Vec<(String, String)>> {
        let v = self.get("registered-models/get", &[("name", name)]).await?;
        Ok(v["registered_model"]["aliases"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| {
                        Some((
                            x["alias"].as_str()?.to_string(),
                            x["version"].as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    pub async fn set_alias(&self, name: &str, alias: &str, version: &str) -> MlflowResult<()> {
        self.post(
            "registered-models/alias",
            json!({"name": name, "alias": alias, "version": version}),
        )
        .await?;
        Ok(())
    }

    /// MLflow reads the arguments of this DELETE from a JSON body.
    pub async fn delete_alias(&self, name: &str, alias: &str) -> MlflowResult<()> {
        let req = self
            .http
            .delete(format!("{}/registered-models/alias", self.base))
            .json(&json!({"name": name, "alias": alias}));
        match self.send("registered-models/alias", req).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn tag_list(tags: &[(String, String)]) -> Vec<Value> {
    tags.iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect()
}
