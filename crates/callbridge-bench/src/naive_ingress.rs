//! The naive ingress, for contrast only: the same checks and the same message as the
//! real one, but one channel and one confirm at a time — each request publishes and
//! waits for its confirm while holding the channel's lock, so nothing is pipelined.
//! Run as its own process (`callbridge-bench-naive-ingress`) so it is placed and
//! measured exactly like the real ingress.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context;
use callbridge_ingress::message::CallbackMessage;
use callbridge_runtime::amqp::{connect, declare_topology, open_confirmed_channel};
use callbridge_types::event::parse_callback;
use callbridge_types::signature::{X_SIGNATURE_HEADER, verify_x_signature};
use lapin::options::BasicPublishOptions;
use lapin::{Channel, Confirmation};
use serde_json::json;
use tokio::sync::Mutex;

/// Environment variable of the listen address.
pub const BIND_ENV: &str = "NAIVE_INGRESS_BIND";

/// What the naive ingress is given (the real ingress's variables where they exist).
#[derive(Debug, Clone)]
pub struct NaiveIngressConfig {
    pub bind: SocketAddr,
    pub amqp_url: String,
    pub secrets: Vec<Vec<u8>>,
    pub accountcode: String,
}

impl NaiveIngressConfig {
    /// `NAIVE_INGRESS_BIND`, `RABBITMQ_URL`, `CALLBACK_SECRET_KEY` (comma-separated),
    /// `CENTRALIZED_CALLING_ACCOUNT_CODE`.
    pub fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
        Ok(NaiveIngressConfig {
            bind: var(BIND_ENV)?
                .parse()
                .with_context(|| format!("{BIND_ENV} is not an address"))?,
            amqp_url: var("RABBITMQ_URL")?,
            secrets: var("CALLBACK_SECRET_KEY")?
                .split(',')
                .map(|secret| secret.as_bytes().to_vec())
                .collect(),
            accountcode: var("CENTRALIZED_CALLING_ACCOUNT_CODE").unwrap_or_default(),
        })
    }
}

struct State {
    /// The one channel; its lock is held from publish to confirm.
    channel: Mutex<Channel>,
    secrets: Vec<Vec<u8>>,
    accountcode: String,
}

/// Connects, declares the topology and serves `POST /callback` and `GET /readyz` until
/// the process is stopped.
pub async fn serve(config: NaiveIngressConfig) -> anyhow::Result<()> {
    let connection = connect(&config.amqp_url, "callbridge-bench-naive-ingress").await?;
    declare_topology(&connection).await?;
    let channel = open_confirmed_channel(&connection).await?;
    let state = web::Data::from(Arc::new(State {
        channel: Mutex::new(channel),
        secrets: config.secrets,
        accountcode: config.accountcode,
    }));
    HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/callback", web::post().to(receive))
            .route("/readyz", web::get().to(HttpResponse::Ok))
    })
    .bind(config.bind)
    .with_context(|| format!("while binding {}", config.bind))?
    .run()
    .await
    .context("while serving")
}

async fn receive(request: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let signature = request
        .headers()
        .get(X_SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok());
    if verify_x_signature(&state.secrets, signature, &body).is_err() {
        return HttpResponse::Unauthorized().json(json!({"error": "Invalid signature"}));
    }
    let validated = match parse_callback(&body, &state.accountcode) {
        Ok(validated) => validated,
        Err(error) => {
            return HttpResponse::BadRequest()
                .json(json!({"error": "Invalid callback data", "detail": error.to_string()}));
        }
    };
    let message = CallbackMessage::new(None, &body, chrono::Utc::now(), validated.event);
    let channel = state.channel.lock().await;
    let confirmed = async {
        let confirm = channel
            .basic_publish(
                message.exchange().into(),
                message.routing_key.as_str().into(),
                // Mandatory like the real ingress: unroutable comes back, not confirmed.
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &message.body,
                message.properties(),
            )
            .await?;
        confirm.await
    }
    .await;
    drop(channel);
    match confirmed {
        Ok(Confirmation::Ack(None)) => HttpResponse::Ok().json(json!({"status": "success"})),
        _ => HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .json(json!({"error": "broker unavailable"})),
    }
}
