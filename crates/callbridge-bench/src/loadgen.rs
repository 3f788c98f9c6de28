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

/// A keep-alive HTTP/1.1 client for one URL, cheap enough per request that the load
/// generator leaves the shared cores to the service under test.
///
/// It writes each request in one `write` and reads the answer by its `Content-Length`,
/// with nothing else per request: a general-purpose client (reqwest) spent about 33 µs of
/// CPU per callback on the load generator's side, CPU the ingress and the broker then
/// lacked on a 2-core machine. Idle connections are kept for the next request.
#[derive(Debug)]
pub struct LoadClient {
    address: String,
    path: String,
    idle: std::sync::Mutex<Vec<KeepAlive>>,
}

/// A plain-HTTP URL `http://host:port/path` as a client.
pub fn client(url: &str) -> anyhow::Result<Arc<LoadClient>> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("the load generator speaks plain HTTP only: {url}"))?;
    let (address, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    Ok(Arc::new(LoadClient {
        address: address.to_owned(),
        path: if path.is_empty() {
            "/".into()
        } else {
            path.to_owned()
        },
        idle: std::sync::Mutex::new(Vec::new()),
    }))
}

/// One keep-alive connection and its buffers.
#[derive(Debug)]
struct KeepAlive {
    stream: tokio::net::TcpStream,
    request: Vec<u8>,
    answer: Vec<u8>,
}

impl LoadClient {
    async fn connection(&self) -> std::io::Result<KeepAlive> {
        let reused = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        if let Some(connection) = reused {
            return Ok(connection);
        }
        let stream = tokio::net::TcpStream::connect(&self.address).await?;
        // Small requests: do not let Nagle hold them back.
        stream.set_nodelay(true)?;
        Ok(KeepAlive {
            stream,
            request: Vec::with_capacity(2048),
            answer: Vec::with_capacity(512),
        })
    }

    fn release(&self, connection: KeepAlive) {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(connection);
    }

    /// Posts one signed callback: `Ok(status)` once the whole answer is read.
    async fn post(&self, body: &SignedBody) -> std::io::Result<u16> {
        use std::io::Write as _;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let mut connection = self.connection().await?;
        connection.request.clear();
        write!(
            connection.request,
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{}: {}\r\nContent-Length: {}\r\n\r\n",
            self.path,
            self.address,
            X_SIGNATURE_HEADER,
            body.signature,
            body.body.len()
        )?;
        connection.request.extend_from_slice(&body.body);
        connection.stream.write_all(&connection.request).await?;

        connection.answer.clear();
        let head = loop {
            if let Some(head) = parse_head(&connection.answer)? {
                break head;
            }
            if connection.stream.read_buf(&mut connection.answer).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        };
        while connection.answer.len() < head.length + head.body_length {
            if connection.stream.read_buf(&mut connection.answer).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        if head.keep_alive {
            self.release(connection);
        }
        Ok(head.status)
    }
}

/// The parts of an HTTP/1.1 answer's head the client needs.
#[derive(Debug, PartialEq)]
struct AnswerHead {
    status: u16,
    /// Bytes of the head, blank line included.
    length: usize,
    body_length: usize,
    keep_alive: bool,
}

/// Parses the head at the start of `answer`: `Ok(None)` while it is incomplete. An
/// answer without `Content-Length` is an error (the ingress always sends one).
fn parse_head(answer: &[u8]) -> std::io::Result<Option<AnswerHead>> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let Some(end) = answer.windows(4).position(|window| window == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head =
        std::str::from_utf8(&answer[..end]).map_err(|_| invalid("a head that is not text"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("no status line"))?;
    let mut body_length = None;
    let mut keep_alive = true;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            body_length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            keep_alive = false;
        }
    }
    Ok(Some(AnswerHead {
        status,
        length: end + 4,
        body_length: body_length.ok_or_else(|| invalid("no Content-Length"))?,
        keep_alive,
    }))
}

async fn post(client: &LoadClient, body: &SignedBody) -> Outcome {
    let started = Instant::now();
    match client.post(body).await {
        Ok(200) => Outcome::Accepted(started.elapsed().as_secs_f64() * 1e3),
        Ok(_) | Err(_) => Outcome::Refused,
    }
}

/// `concurrency` workers post back to back for `duration`.
pub async fn closed_loop(
    client: &Arc<LoadClient>,
    bodies: &Arc<BodySource>,
    concurrency: usize,
    duration: Duration,
) -> LoadResult {
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, bodies) = (Arc::clone(client), Arc::clone(bodies));
        workers.spawn(async move {
            let mut result = LoadResult::default();
            while Instant::now() < deadline {
                result.merge(post(&client, bodies.take()).await);
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
    client: &Arc<LoadClient>,
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
            let (client, bodies) = (Arc::clone(client), Arc::clone(bodies));
            requests.spawn(async move { post(&client, bodies.take()).await });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_head_is_read_only_once_complete() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\ncontent-type: application/json\r\n\r\n{\"status\":\"success\"}";
        let head_end = answer.len() - 20;
        assert_eq!(parse_head(&answer[..head_end - 1]).unwrap(), None);
        assert_eq!(
            parse_head(answer).unwrap(),
            Some(AnswerHead {
                status: 200,
                length: head_end,
                body_length: 20,
                keep_alive: true,
            })
        );
    }

    #[test]
    fn a_closing_or_unsized_answer_is_recognised() {
        let closing =
            b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        let head = parse_head(closing).unwrap().unwrap();
        assert_eq!((head.status, head.keep_alive), (408, false));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn a_url_becomes_an_address_and_a_path() {
        let parsed = client("http://127.0.0.1:8080/callback").unwrap();
        assert_eq!(
            (parsed.address.as_str(), parsed.path.as_str()),
            ("127.0.0.1:8080", "/callback")
        );
        assert!(client("https://example.com/").is_err());
    }
}
