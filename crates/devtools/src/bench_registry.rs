//! `mlx-hub bench-registry` (hidden; `scripts/perf-report` runs it): registry reads
//! against a running `mlx-hub serve` at a fixed rate (open loop: requests start on
//! schedule whether or not earlier ones have answered, so a slow server shows up in
//! the latency instead of lowering the rate). Rotates over the model list, one
//! model, its latest version and `/v1/models`; prints p50/p90/p99 latency.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Base URL of the hub, e.g. http://127.0.0.1:8080 (loopback only: this is a load test).
    #[arg(long)]
    url: String,
    /// Registered models to read (comma-separated); each needs a version.
    #[arg(long, value_delimiter = ',', required = true)]
    models: Vec<String>,
    /// Requests per second.
    #[arg(long, default_value_t = 200)]
    rps: u32,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    secs: u32,
    /// Print one JSON object instead of a line.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, Debug)]
struct Summary {
    requests: usize,
    target_rps: u32,
    sent_rps: f64,
    errors: usize,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Nearest-rank percentile of sorted latencies, in milliseconds.
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

fn is_loopback(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or("");
    let host = rest.split('/').next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn summarize(mut lat: Vec<Duration>, errors: usize, target_rps: u32, sent: Duration) -> Summary {
    lat.sort();
    Summary {
        requests: lat.len(),
        target_rps,
        sent_rps: lat.len() as f64 / sent.as_secs_f64().max(1e-9),
        errors,
        p50_ms: percentile_ms(&lat, 0.50),
        p90_ms: percentile_ms(&lat, 0.90),
        p99_ms: percentile_ms(&lat, 0.99),
        max_ms: lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    }
}

async fn load(args: &Args) -> anyhow::Result<Summary> {
    let base = args.url.trim_end_matches('/').to_string();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    // Every model must answer before the clock starts: a typo is not a latency figure.
    for m in &args.models {
        let r = http
            .get(format!("{base}/api/models/{m}/versions/latest"))
            .send()
            .await
            .with_context(|| format!("--url: {base} does not answer"))?;
        if r.status() != 200 {
            bail!(
                "--models: {m} has no latest version at {base} ({})",
                r.status()
            );
        }
    }
    let total = (u64::from(args.rps) * u64::from(args.secs)) as usize;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rps)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        tick.tick().await;
        let m = &args.models[(i / 4) % args.models.len()];
        let url = match i % 4 {
            0 => format!("{base}/api/models?limit=50"),
            1 => format!("{base}/api/models/{m}"),
            2 => format!("{base}/api/models/{m}/versions/latest"),
            _ => format!("{base}/v1/models"),
        };
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let ok = match http.get(&url).send().await {
                Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            (t.elapsed(), ok)
        }));
    }
    let sent = t0.elapsed();
    let mut lat = Vec::with_capacity(total);
    let mut errors = 0;
    for t in tasks {
        let (d, ok) = t.await?;
        lat.push(d);
        errors += usize::from(!ok);
    }
    Ok(summarize(lat, errors, args.rps, sent))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !is_loopback(&args.url) {
        bail!(
            "--url: {} is not a loopback address (127.0.0.0/8, localhost, [::1])",
            args.url
        );
    }
    if args.rps == 0 || args.secs == 0 {
        bail!("--rps and --secs must be positive");
    }
    let s = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(load(&args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!(
            "{} requests at {}/s ({:.1}/s sent): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, \
             max {:.2} ms, errors {}",
            s.requests, s.target_rps, s.sent_rps, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms, s.errors
        );
    }
    if s.errors > 0 {
        bail!("{} of {} requests failed", s.errors, s.requests);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:1/",
            "http://[::1]:80",
            "http://127.0.0.2",
        ] {
            assert!(is_loopback(ok), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:8080",
            "http://example.invalid",
            "127.0.0.1:8080",
            "http://127.0.0.1.evil:80",
        ] {
            assert!(!is_loopback(bad), "{bad}");
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let lat: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let s = summarize(lat, 0, 100, Duration::from_secs(1));
        assert_eq!(s.requests, 100);
        assert_eq!(s.p50_ms.round(), 51.0);
        assert_eq!(s.p99_ms.round(), 99.0);
        assert_eq!(s.max_ms.round(), 100.0);
    }
}
