//! The HTTP load generator: keep-alive connections posting distinct signed callbacks,
//! either closed-loop (N workers, each sending its next request when the last one is
//! answered: finds the peak) or open-loop (requests started at a fixed rate whatever
//! the answers: latency at a given load, without coordinated omission).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use callbridge_types::signature::X_SIGNATURE_HEADER;
use tokio::task::JoinSet;

use crate::stats::{per_second, percentile};
use crate::workload::SignedBody;

/// Bodies to send, handed out in order; wraps around when exhausted (a repeated body is
/// still a valid callback: deduplication is the persister's business).
#[derive(Debug)]
pub struct BodySource {
    bodies: Vec<SignedBody>,
    next: AtomicUsize,
}

impl BodySource {
    pub fn new(bodies: Vec<SignedBody>) -> Arc<BodySource> {
        assert!(
            !bodies.is_empty(),
            "a load generator needs at least one body"
        );
        Arc::new(BodySource {
            bodies,
            next: AtomicUsize::new(0),
        })
    }

    fn take(&self) -> &SignedBody {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        &self.bodies[index % self.bodies.len()]
    }

    /// Bodies handed out so far.
    pub fn taken(&self) -> usize {
        self.next.load(Ordering::Relaxed)
    }
}

/// What one load level produced.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Answered 200.
    pub accepted: usize,
    /// Answered anything else, or not at all.
    pub refused: usize,
    pub seconds: f64,
    /// Latency of each accepted request (send → full answer), ms, sorted.
    pub latencies_ms: Vec<f64>,
}

impl LoadResult {
    pub fn accepted_per_second(&self) -> f64 {
        per_second(self.accepted, self.seconds)
    }

    pub fn p50_ms(&self) -> f64 {
        percentile(&self.latencies_ms, 0.50).unwrap_or(f64::NAN)
    }

    pub fn p99_ms(&self) -> f64 {
        percentile(&self.latencies_ms, 0.99).unwrap_or(f64::NAN)
    }

    fn merge(&mut self, other: Outcome) {
        match other {
            Outcome::Accepted(ms) => {
                self.accepted += 1;
                self.latencies_ms.push(ms);
            }
            Outcome::Refused => self.refused += 1,
        }
    }

    fn finish(mut self, seconds: f64) -> LoadResult {
        self.seconds = seconds;
        self.latencies_ms.sort_by(f64::total_cmp);
        self
    }
}

enum Outcome {
    Accepted(f64),
    Refused,
}

/// A keep-alive HTTP/1.1 client with room for every connection a level opens.
pub fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        // Small requests: do not let Nagle hold them back.
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .context("while building the HTTP client")
}

async fn post(client: &reqwest::Client, url: &str, body: &SignedBody) -> Outcome {
    let started = Instant::now();
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(X_SIGNATURE_HEADER, &body.signature)
        .body(body.body.clone())
        .send()
        .await;
    match response {
        Ok(response) => {
            let ok = response.status() == reqwest::StatusCode::OK;
            // Read the answer to the end so the connection is reused.
            let read = response.bytes().await.is_ok();
            if ok && read {
                Outcome::Accepted(started.elapsed().as_secs_f64() * 1e3)
            } else {
                Outcome::Refused
            }
        }
        Err(_) => Outcome::Refused,
    }
}

/// `concurrency` workers post back to back for `duration`.
pub async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    bodies: &Arc<BodySource>,
    concurrency: usize,
    duration: Duration,
) -> LoadResult {
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, url, bodies) = (client.clone(), url.to_owned(), Arc::clone(bodies));
        workers.spawn(async move {
            let mut result = LoadResult::default();
            while Instant::now() < deadline {
                result.merge(post(&client, &url, bodies.take()).await);
            }
            result
        });
    }
    let mut total = LoadResult::default();
    while let Some(worker) = workers.join_next().await {
        if let Ok(result) = worker {
            total.accepted += result.accepted;
            total.refused += result.refused;
            total.latencies_ms.extend(result.latencies_ms);
        }
    }
    total.finish(started.elapsed().as_secs_f64())
}

/// Starts `rate` requests per second for `duration`, each on its own task, whatever
/// the answers; returns once every request is answered.
pub async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    bodies: &Arc<BodySource>,
    rate: f64,
    duration: Duration,
) -> LoadResult {
    let total = (rate * duration.as_secs_f64()).round() as usize;
    let started = Instant::now();
    let mut requests = JoinSet::new();
    let mut sent = 0;
    while sent < total {
        let due = ((started.elapsed().as_secs_f64() * rate) as usize + 1).min(total);
        while sent < due {
            let (client, url, bodies) = (client.clone(), url.to_owned(), Arc::clone(bodies));
            requests.spawn(async move { post(&client, &url, bodies.take()).await });
            sent += 1;
        }
        // Tokio's timer ticks in milliseconds: the requests of each tick go out together.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut result = LoadResult::default();
    while let Some(outcome) = requests.join_next().await {
        if let Ok(outcome) = outcome {
            result.merge(outcome);
        }
    }
    result.finish(started.elapsed().as_secs_f64())
}
