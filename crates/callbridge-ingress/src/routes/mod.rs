//! HTTP routes of the ingress. `/healthz`, `/readyz` and `/metrics` come from
//! `callbridge_runtime::health`.

pub mod callback;
pub mod tracing;
