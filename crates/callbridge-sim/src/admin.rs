//! `/admin/*`: change knobs live, hold and release API requests, change the API key or the
//! callback target, script outcomes per number, read the ground truth, wait for
//! deliveries, reset. Open unless `SIM_ADMIN_TOKEN` is set, in which case
//! `Authorization: Bearer <token>` is required.

use std::collections::BTreeMap;
use std::future::{Ready, ready};
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::config::{Outcome, parse_secret};
use crate::state::SimState;

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/healthz", web::get().to(healthz))
        // Ready as soon as it serves (it holds no connection that could be lost): the
        // console's services page asks every service its /readyz.
        .route("/readyz", web::get().to(readyz))
        .service(
            web::scope("/admin")
                .route("/knobs", web::get().to(get_knobs))
                .route("/knobs", web::put().to(put_knobs))
                .route("/hold", web::post().to(hold))
                .route("/release", web::post().to(release))
                .route("/api-key", web::put().to(put_api_key))
                .route("/callback", web::put().to(put_callback))
                .route("/script", web::get().to(get_script))
                .route("/script", web::put().to(put_script))
                .route("/ground-truth", web::get().to(ground_truth))
                .route("/wait-idle", web::get().to(wait_idle))
                .route("/reset", web::post().to(reset)),
        );
}

/// Proof that the request may use the admin API.
struct Admin;

impl FromRequest for Admin {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = request.app_data::<web::Data<SimState>>() else {
            return ready(Err(actix_web::error::ErrorInternalServerError("no state")));
        };
        let Some(token) = &state.admin_token else {
            return ready(Ok(Admin));
        };
        let presented = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or("");
        if bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes())) {
            ready(Ok(Admin))
        } else {
            ready(Err(actix_web::error::ErrorUnauthorized(
                "admin token required (Authorization: Bearer <SIM_ADMIN_TOKEN>)",
            )))
        }
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readyz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ready" }))
}

async fn get_knobs(_: Admin, state: web::Data<SimState>) -> HttpResponse {
    HttpResponse::Ok().json(state.knobs())
}

async fn put_knobs(
    _: Admin,
    state: web::Data<SimState>,
    patch: web::Json<serde_json::Value>,
) -> HttpResponse {
    match state.patch_knobs(&patch) {
        Ok(knobs) => {
            tracing::info!(?knobs, "knobs changed");
            HttpResponse::Ok().json(knobs)
        }
        Err(error) => HttpResponse::BadRequest().json(json!({ "error": error.to_string() })),
    }
}

fn hold_status(state: &SimState, hold: bool) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "hold": hold, "held_now": state.held_now() }))
}

async fn hold(_: Admin, state: web::Data<SimState>) -> HttpResponse {
    state.hold();
    hold_status(&state, true)
}

async fn release(_: Admin, state: web::Data<SimState>) -> HttpResponse {
    state.release();
    hold_status(&state, false)
}

#[derive(Deserialize)]
struct ApiKeyChange {
    api_key: String,
}

async fn put_api_key(
    _: Admin,
    state: web::Data<SimState>,
    change: web::Json<ApiKeyChange>,
) -> HttpResponse {
    match parse_secret(&change.into_inner().api_key) {
        Ok(key) => {
            state.set_api_key(key);
            HttpResponse::NoContent().finish()
        }
        Err(error) => {
            HttpResponse::BadRequest().json(json!({ "error": format!("api_key: {error}") }))
        }
    }
}

#[derive(Deserialize)]
struct CallbackChange {
    url: Option<String>,
    secret: Option<String>,
}

async fn put_callback(
    _: Admin,
    state: web::Data<SimState>,
    change: web::Json<CallbackChange>,
) -> HttpResponse {
    let change = change.into_inner();
    let url = match change
        .url
        .as_deref()
        .map(str::parse::<reqwest::Url>)
        .transpose()
    {
        Ok(url) => url,
        Err(error) => {
            return HttpResponse::BadRequest().json(json!({ "error": format!("url: {error}") }));
        }
    };
    let secret = match change.secret.as_deref().map(parse_secret).transpose() {
        Ok(secret) => secret,
        Err(error) => {
            return HttpResponse::BadRequest().json(json!({ "error": format!("secret: {error}") }));
        }
    };
    state.set_callback(url, secret);
    HttpResponse::NoContent().finish()
}

async fn get_script(_: Admin, state: web::Data<SimState>) -> HttpResponse {
    HttpResponse::Ok().json(state.script())
}

/// `{"<phone_number>": ["busy", "busy", "completed"], …}`: replaces the script. An
/// unknown outcome is a 400 naming it (through `Outcome`'s own parsing), and nothing
/// changes.
async fn put_script(_: Admin, state: web::Data<SimState>, body: web::Bytes) -> HttpResponse {
    match serde_json::from_slice::<BTreeMap<String, Vec<Outcome>>>(&body) {
        Ok(script) => {
            tracing::info!(numbers = script.len(), "outcome script set");
            state.set_script(script);
            HttpResponse::Ok().json(state.script())
        }
        Err(error) => HttpResponse::BadRequest().json(json!({
            "error": format!(
                "script: {error}; expected {{\"<phone_number>\": [\"busy\", \"completed\"], …}}"
            )
        })),
    }
}

#[derive(Deserialize)]
struct GroundTruthQuery {
    batch_id: Option<i32>,
}

async fn ground_truth(
    _: Admin,
    state: web::Data<SimState>,
    query: web::Query<GroundTruthQuery>,
) -> HttpResponse {
    HttpResponse::Ok().json(state.ground_truth(query.batch_id))
}

#[derive(Deserialize)]
struct WaitIdleQuery {
    timeout_ms: Option<u64>,
}

/// Long-polls until every dispatched call's callbacks are finished (default 30 s).
async fn wait_idle(
    _: Admin,
    state: web::Data<SimState>,
    query: web::Query<WaitIdleQuery>,
) -> HttpResponse {
    let timeout = Duration::from_millis(query.timeout_ms.unwrap_or(30_000));
    let idle = state.wait_idle(timeout).await;
    HttpResponse::Ok().json(json!({ "idle": idle, "pending_calls": state.pending_calls() }))
}

async fn reset(_: Admin, state: web::Data<SimState>) -> HttpResponse {
    state.reset();
    HttpResponse::NoContent().finish()
}
