//! Triton's statistics extension, `GET /v2/models/stats`, reduced to what the capacity
//! estimate needs: per model, per batch size, the executions and their compute time.
//!
//! The reply (`docs/protocol/extension_statistics.md`) lists `model_stats[]`, one entry per
//! model version, each with `batch_stats[]` of `{batch_size, compute_input, compute_infer,
//! compute_output}`, each a cumulative `{count, ns}`. A sample capture from Triton 2.51 is in
//! `tests/fixtures/stats/`.
//!
//! Parsing is strict about types (a negative, fractional or non-numeric count is an error, not
//! a 0) and lenient about fields the agent does not read.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The reply could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    /// Not JSON, or not the statistics schema (a count that is not a non-negative integer, a
    /// missing `model_stats`).
    #[error("bad statistics reply: {0}")]
    Json(String),
    /// A batch size of 0: no execution has that size, so the reply is not Triton's.
    #[error("bad statistics reply: model '{0}' lists batch_size 0")]
    ZeroBatch(String),
}

/// The `reason` label of `triton_sidecar_statistics_errors_total`: why a read of
/// `/v2/models/stats` gave no statistics. The label strings live only in
/// [`StatsFailure::as_str`], so the counter and the log line cannot drift apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StatsFailure {
    /// 401/403: a restricted API, and the access header is missing or wrong.
    Forbidden,
    /// 404: this Triton was built without the statistics extension.
    NotFound,
    /// Any other HTTP status.
    HttpStatus,
    /// No answer within `--scrape-timeout`.
    Timeout,
    /// The connection was refused or failed.
    Connect,
    /// The body was larger than `--max-body` or broke off.
    Body,
    /// The body is not Triton's statistics schema.
    Invalid,
}

impl StatsFailure {
    /// Every reason, so the counter family exists at 0 from start-up.
    pub const ALL: [StatsFailure; 7] = [
        StatsFailure::Forbidden,
        StatsFailure::NotFound,
        StatsFailure::HttpStatus,
        StatsFailure::Timeout,
        StatsFailure::Connect,
        StatsFailure::Body,
        StatsFailure::Invalid,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StatsFailure::Forbidden => "forbidden",
            StatsFailure::NotFound => "not_found",
            StatsFailure::HttpStatus => "http_status",
            StatsFailure::Timeout => "timeout",
            StatsFailure::Connect => "connect",
            StatsFailure::Body => "body",
            StatsFailure::Invalid => "invalid",
        }
    }

    /// The reason of a failed request.
    pub fn of(e: &super::client::ScrapeError) -> StatsFailure {
        use super::client::ScrapeError;
        match e {
            ScrapeError::Status(401 | 403) => StatsFailure::Forbidden,
            ScrapeError::Status(404) => StatsFailure::NotFound,
            ScrapeError::Status(_) => StatsFailure::HttpStatus,
            ScrapeError::Timeout => StatsFailure::Timeout,
            ScrapeError::Refused | ScrapeError::Connect(_) => StatsFailure::Connect,
            ScrapeError::TooLarge { .. } | ScrapeError::Body(_) => StatsFailure::Body,
            ScrapeError::NotUtf8 | ScrapeError::Parse(_) => StatsFailure::Invalid,
        }
    }
}

impl std::fmt::Display for StatsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Executions of one batch size, cumulative since the model was loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BatchTotals {
    /// Executions (`compute_infer.count`).
    pub count: f64,
    /// Their compute time, ns: `compute_input + compute_infer + compute_output`. Queue time is
    /// left out: it is waiting, not work, and grows with load rather than with the batch.
    pub ns: f64,
}

/// Per batch size, the totals of one model, summed over its versions.
pub type ModelBatches = BTreeMap<u64, BatchTotals>;

/// What the estimate uses of one model, summed over its versions, cumulative.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelStats {
    /// Executions and their cost per batch size. A batch's size counts *rows* (inferences):
    /// a client request may carry several.
    pub batches: ModelBatches,
    /// `inference_count`: rows inferred.
    pub inferences: f64,
    /// Requests that executed: `inference_stats.success.count` less `cache_hit.count`
    /// (`inference_count` leaves cache hits out too, so the two stay comparable).
    pub requests: f64,
}

#[derive(Deserialize)]
struct Reply {
    model_stats: Vec<ModelStat>,
}

#[derive(Deserialize)]
struct ModelStat {
    name: String,
    #[serde(default)]
    inference_count: u64,
    #[serde(default)]
    inference_stats: InferenceStats,
    #[serde(default)]
    batch_stats: Vec<BatchStat>,
}

#[derive(Deserialize, Default)]
struct InferenceStats {
    #[serde(default)]
    success: CountNs,
    #[serde(default)]
    cache_hit: CountNs,
}
#[derive(Deserialize)]
struct BatchStat {
    batch_size: u64,
    #[serde(default)]
    compute_input: CountNs,
    compute_infer: CountNs,
    #[serde(default)]
    compute_output: CountNs,
}

#[derive(Deserialize, Default)]
struct CountNs {
    count: u64,
    ns: u64,
}

/// Parse a reply into per-model batch totals. Models with no batch statistics yet (never
/// executed) are present with an empty map, so a loaded idle model is told apart from an
/// unknown one.
pub fn parse(body: &[u8]) -> Result<BTreeMap<String, ModelStats>, StatsError> {
    let reply: Reply = serde_json::from_slice(body).map_err(|e| StatsError::Json(e.to_string()))?;
    let mut out: BTreeMap<String, ModelStats> = BTreeMap::new();
    for m in reply.model_stats {
        let entry = out.entry(m.name.clone()).or_default();
        entry.inferences += m.inference_count as f64;
        entry.requests +=
            m.inference_stats.success.count as f64 - m.inference_stats.cache_hit.count as f64;
        for b in m.batch_stats {
            if b.batch_size == 0 {
                return Err(StatsError::ZeroBatch(m.name));
            }
            let t = entry.batches.entry(b.batch_size).or_default();
            t.count += b.compute_infer.count as f64;
            t.ns +=
                b.compute_input.ns as f64 + b.compute_infer.ns as f64 + b.compute_output.ns as f64;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_a_typed_error() {
        for body in [
            &b"not json"[..],
            b"{}",
            b"{\"model_stats\": 3}",
            b"{\"model_stats\": [{\"name\": \"m\", \"batch_stats\": [{\"batch_size\": 1, \"compute_infer\": {\"count\": -1, \"ns\": 5}}]}]}",
            b"{\"model_stats\": [{\"name\": \"m\", \"batch_stats\": [{\"batch_size\": 1, \"compute_infer\": {\"count\": NaN, \"ns\": 5}}]}]}",
            b"{\"model_stats\": [{\"name\": \"m\", \"batch_stats\": [{\"batch_size\": 1, \"compute_infer\": {\"count\": 1.5, \"ns\": 5}}]}]}",
            b"{\"model_stats\": [{\"name\": \"m\", \"batch_stats\": [{\"batch_size\": 1, \"compute_infer\": {\"count\": \"x\", \"ns\": 5}}]}]}",
            b"\xff\xfe",
        ] {
            assert!(
                matches!(parse(body), Err(StatsError::Json(_))),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let zero = br#"{"model_stats": [{"name": "m", "batch_stats": [{"batch_size": 0, "compute_infer": {"count": 1, "ns": 5}}]}]}"#;
        assert_eq!(parse(zero), Err(StatsError::ZeroBatch("m".into())));
    }

    #[test]
    fn the_real_capture_parses() {
        let body = include_bytes!("../../tests/fixtures/stats/stats_with_header.json");
        let s = parse(body).unwrap();
        let lin = &s["lin"];
        // capture.py sent 40 requests of 1, 2, 4 and 8 rows (10 of each).
        assert_eq!(lin.requests, 40.0);
        assert_eq!(lin.inferences, 150.0);
        assert_eq!(
            lin.batches.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 4, 8]
        );
        assert!(lin.batches.values().all(|t| t.count == 10.0 && t.ns > 0.0));
    }

    #[test]
    fn versions_add_up_and_idle_models_are_listed() {
        let body = br#"{"model_stats": [
            {"name": "m", "version": "1", "batch_stats": [{"batch_size": 2,
              "compute_input": {"count": 3, "ns": 10}, "compute_infer": {"count": 3, "ns": 100}, "compute_output": {"count": 3, "ns": 1}}]},
            {"name": "m", "version": "2", "batch_stats": [{"batch_size": 2,
              "compute_input": {"count": 1, "ns": 0}, "compute_infer": {"count": 1, "ns": 50}, "compute_output": {"count": 1, "ns": 0}}]},
            {"name": "idle", "version": "1", "batch_stats": []}]}"#;
        let s = parse(body).unwrap();
        assert_eq!(
            s["m"].batches[&2],
            BatchTotals {
                count: 4.0,
                ns: 161.0
            }
        );
        assert!(s["idle"].batches.is_empty());
    }
}
