//! `callbridge-submitter` drains `local_call_queue` into the centralized calling API:
//! it claims due rows with a lease, sends each batch as one insert request
//! (chunks of [`callbridge_types::centralized_api::MAX_ITEMS_PER_INSERT`] only for an oversized batch), dispatches the
//! queued calls, retries with backoff, and never dials a person twice because of its own
//! retry or crash.
//!
//! ```no_run
//! # async fn demo(config: callbridge_runtime::config::SubmitterConfig) -> anyhow::Result<()> {
//! use callbridge_submitter::Application;
//! let app = Application::build(&config).await?;
//! println!("health on {}", app.health_addr());
//! // Tests drive rounds synchronously instead: app.submitter().drain_once().await?
//! app.run_until_stopped(callbridge_runtime::shutdown::shutdown_token()?).await
//! # }
//! ```
//!
//! # The state machine of a queue row
//!
//! `attempt_started_at` is the evidence that a request may have carried a row. It is
//! written, and committed, by the claim itself — before any request goes out — so a crash
//! at any later point leaves it behind. The invariant: **a row is sent only if it had no
//! such evidence when claimed, or after batch-status proved that the centralized system
//! holds none of its batch's rows whose outcome was unknown.**
//!
//! ```text
//!            claim (lease; attempt_started_at := now, its old value kept in memory)
//! pending ─────────────────────────────────────────────────────────────▶ submitting
//!    ▲                                                                      │
//!    │ release: shutdown before sending, key refused (401/403),             │
//!    │ batch busy elsewhere, batch-status unavailable                       │
//!    │ (no attempt counted; the old evidence restored)  ◀───────────────────┤
//!    │                                                                      │ had evidence?
//!    │                                                                      ▼ reconcile via batch-status
//!    │                    all held ─────────────────────────────▶ submitted
//!    │                    some held / unreadable ───────────────▶ needs_review (never resent)
//!    │                    none held, attempts left ─────────────▶ sent (below)
//!    │                    none held, out of attempts ───────────▶ failed
//!    │
//!    │                          insert request (renewing the lease first if it runs short)
//!    │     success, every number counted ────────────────────────▶ submitted
//!    │     4xx other than 401/403/408/429 ───────────────────────▶ failed (the API's message)
//!    ├──── 429, connection refused: certainly not taken ──────────  retry_count+1, evidence
//!    │       cleared, due after backoff (≥ Retry-After); out of attempts ─▶ failed
//!    └──── 5xx, timeout, connection lost, `warning`, short `inserted_count`: unknown ──
//!            retry_count+1, evidence kept, due after backoff (at once when out of
//!            attempts), so the next claim reconciles before anything is resent
//! ```
//!
//! A `submitting` row whose lease expired (its submitter died or stalled) is due again;
//! the claim counts the lost attempt, and since the row has evidence it is reconciled
//! before anything else. Every write after the claim is guarded by
//! `lease_owner = me AND queue_status = 'submitting'`, and a lease is always longer than
//! a request, so a submitter that lost its lease never overwrites its successor.
//!
//! Reconciliation subtracts the batch's `submitted` rows from the numbers batch-status
//! lists; whatever else it lists must be matched by the unknown rows (all held) or be
//! absent (none held). Numbers that match no row, or that rows under review could
//! account for, make the answer ambiguous ([`reconcile::judge`]). A batch on which
//! another submitter holds a live lease is not reconciled until that lease ends, since a
//! request of theirs may be in flight.
//!
//! Whenever rows become `submitted`, `failed` or `needs_review`, the same transaction
//! creates the `call_batches` row if missing, adds the accepted rows to `total_calls`,
//! and calls the shared `callbridge_refresh_batch` routine.
//!
//! # Pausing on a refused key
//!
//! 401/403 from any endpoint pauses submission: `/readyz` reports `api_key` not ready
//! naming `CENTRALIZED_CALLING_API_KEY`, one ERROR line is logged, the rows go back to
//! `pending` untouched (no attempt counted), and each round repeats the refused kind of
//! request until the API accepts the key again — then submission resumes by itself.
//!
//! # Waking up
//!
//! The loop LISTENs on [`startup::QUEUE_CHANNEL`] (a statement-level trigger notifies on
//! every insert into `local_call_queue`), sleeps until the next row is due or lease
//! expires otherwise, and polls every `poll_interval` as a fallback.

pub mod api;
pub mod backoff;
pub mod campaign;
pub mod daily_cap;
pub mod deadline;
pub mod metrics;
pub mod reconcile;
pub mod startup;
pub mod store;
pub mod worker;

pub use startup::Application;
pub use worker::{DrainReport, Submitter};
