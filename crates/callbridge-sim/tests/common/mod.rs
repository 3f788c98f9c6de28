//! Test helpers: a real HTTP callback receiver and small clients for the simulator's API.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use callbridge_sim::{SimConfig, Simulator};
use serde_json::{Value, json};

pub const API_KEY: &str = "test-api-key";
pub const CALLBACK_SECRET: &str = "test-callback-secret";

/// One callback as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: Bytes,
    pub signature: Option<String>,
    pub content_type: Option<String>,
    pub webhook_id: Option<String>,
    pub webhook_timestamp: Option<String>,
    pub webhook_signature: Option<String>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("callback body is JSON")
    }

    pub fn field(&self, name: &str) -> Value {
        self.json()[name].clone()
    }

    pub fn call_id(&self) -> String {
        self.field("call_id").as_str().unwrap().to_owned()
    }

    pub fn event_type(&self) -> String {
        self.field("event_type").as_str().unwrap().to_owned()
    }
}

/// What the receiver answers the next requests with, before it answers 200 to everything.
#[derive(Debug, Clone, Copy)]
pub enum Scripted {
    Status(u16),
    /// Answers 200 only after this long (longer than the sender's timeout: a timeout).
    SlowOk(Duration),
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Scripted>>,
    /// Every answer waits this long (to make requests overlap).
    delay: Mutex<Duration>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A real HTTP server standing in for the registered callback URL: it records every
/// request (only the ones it answered 2xx count as acknowledged) and answers as scripted.
pub struct Receiver {
    pub url: String,
    state: web::Data<ReceiverState>,
    handle: ServerHandle,
}

async fn receive(
    request: HttpRequest,
    body: Bytes,
    state: web::Data<ReceiverState>,
) -> HttpResponse {
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    state.received.lock().unwrap().push(Received {
        body,
        signature: header("X-Signature"),
        content_type: header("Content-Type"),
        webhook_id: header("webhook-id"),
        webhook_timestamp: header("webhook-timestamp"),
        webhook_signature: header("webhook-signature"),
    });
    let scripted = state.script.lock().unwrap().pop_front();
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let response = match scripted {
        Some(Scripted::Status(status)) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                .json(json!({"error": "scripted"}))
        }
        Some(Scripted::SlowOk(wait)) => {
            tokio::time::sleep(wait).await;
            HttpResponse::Ok().json(json!({"status": "success"}))
        }
        None => HttpResponse::Ok().json(json!({"status": "success"})),
    };
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = web::Data::new(ReceiverState::default());
        let data = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/callback", web::post().to(receive))
        })
        .workers(2)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Receiver {
            url: format!("http://{addr}/callback"),
            state,
            handle,
        }
    }

    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.state.script.lock().unwrap().extend(answers);
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Event types per call id, in arrival order.
    pub fn events_by_call(&self) -> BTreeMap<String, Vec<String>> {
        let mut calls: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for received in self.received() {
            calls
                .entry(received.call_id())
                .or_default()
                .push(received.event_type());
        }
        calls
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// A fast-mode simulator sending to `callback_url`, with `knobs` patched in.
pub async fn spawn_sim(callback_url: &str, knobs: Value) -> Simulator {
    let config = SimConfig::for_tests(callback_url).unwrap();
    let sim = Simulator::spawn(config).await.unwrap();
    sim.patch_knobs(&knobs).unwrap();
    sim
}

/// A simulator whose callbacks go nowhere (for API-only tests).
pub async fn spawn_api_only(knobs: Value) -> Simulator {
    // Port 9 (discard) on loopback: nothing listens, deliveries fail fast.
    spawn_sim("http://127.0.0.1:9/callback", knobs).await
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

pub fn numbers(batch: i32, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("9{batch:04}{n:05}")).collect()
}

pub fn insert_body(batch_id: i32, numbers: &[String]) -> Value {
    let data: Vec<Value> = numbers
        .iter()
        .map(|number| json!({"phone_number": number, "custom_data": {"customer_id": format!("C-{number}")}}))
        .collect();
    json!({"batch_id": batch_id, "data": data})
}

pub async fn insert_with_key(
    sim: &Simulator,
    key: &str,
    body: &Value,
) -> Result<reqwest::Response, reqwest::Error> {
    client()
        .post(format!(
            "{}/{}",
            sim.base_url(),
            callbridge_sim::INSERT_PATH
        ))
        .header("X-API-KEY", key)
        .json(body)
        .send()
        .await
}

pub async fn insert(sim: &Simulator, batch_id: i32, numbers: &[String]) -> reqwest::Response {
    insert_with_key(sim, API_KEY, &insert_body(batch_id, numbers))
        .await
        .unwrap()
}

pub async fn batch_status(sim: &Simulator, batch_id: i32) -> reqwest::Response {
    client()
        .get(format!(
            "{}/api/v1/queues/batch-status/{batch_id}",
            sim.base_url()
        ))
        .header("X-API-KEY", API_KEY)
        .send()
        .await
        .unwrap()
}

pub async fn dispatch(sim: &Simulator, query: &str) -> reqwest::Response {
    client()
        .post(format!(
            "{}/{}{query}",
            sim.base_url(),
            callbridge_sim::DISPATCH_PATH
        ))
        .header("X-API-KEY", API_KEY)
        .send()
        .await
        .unwrap()
}

/// Inserts, dispatches and waits until every callback is acknowledged or given up.
pub async fn run_batch(sim: &Simulator, batch_id: i32, numbers: &[String]) {
    assert_eq!(insert(sim, batch_id, numbers).await.status(), 201);
    assert_eq!(dispatch(sim, "").await.status(), 200);
    assert!(
        sim.wait_idle(Duration::from_secs(60)).await,
        "deliveries did not finish"
    );
}

pub async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

/// Polls `condition` until it holds (a state change on another task), failing after 30 s.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}
