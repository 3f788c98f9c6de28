//! The centralized system's view of batches, for the campaign page: batch-status through
//! `callbridge_ops::centralized` (the client `callbridge batches` uses), with a short
//! deadline so a page never waits long on an API that does not answer, and a short-lived
//! memory of each answer so a page refreshing every few seconds does not ask again each
//! time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use callbridge_ops::centralized::{CentralApi, RemoteView};
use callbridge_runtime::config::ApiConfig;

/// One batch-status request waits at most this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Every batch of a page together: past this the page says the API did not answer.
const PAGE_DEADLINE: Duration = Duration::from_secs(4);
/// An answer is shown again, without asking, for this long.
const REMEMBERED_FOR: Duration = Duration::from_secs(10);

/// What the page shows in the centralized system's columns.
#[derive(Debug, Clone, PartialEq)]
pub enum CentralCounts {
    /// No API settings: the page shows the local counts alone and says why.
    NotConfigured,
    /// The answers, in the order of the batches asked about.
    Answered(Vec<RemoteView>),
    /// No answer within [`PAGE_DEADLINE`].
    TimedOut,
}

pub struct CentralView {
    api: Option<CentralApi>,
    remembered: Mutex<HashMap<i32, (Instant, RemoteView)>>,
}

impl CentralView {
    pub fn new(config: Option<&ApiConfig>) -> anyhow::Result<CentralView> {
        let api = config
            .map(|config| {
                CentralApi::new(
                    config,
                    concat!("callbridge-console/", env!("CARGO_PKG_VERSION")),
                    REQUEST_TIMEOUT,
                )
            })
            .transpose()
            .context("while building the centralized API's client")?;
        Ok(CentralView {
            api,
            remembered: Mutex::new(HashMap::new()),
        })
    }

    /// batch-status of each of `batch_ids`, from memory when asked in the last
    /// [`REMEMBERED_FOR`].
    pub async fn batches(&self, batch_ids: &[i32]) -> CentralCounts {
        let Some(api) = &self.api else {
            return CentralCounts::NotConfigured;
        };
        let now = Instant::now();
        let known: HashMap<i32, RemoteView> = {
            let mut remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
            remembered.retain(|_, (at, _)| now.duration_since(*at) < REMEMBERED_FOR);
            batch_ids
                .iter()
                .filter_map(|id| remembered.get(id).map(|(_, view)| (*id, view.clone())))
                .collect()
        };
        let missing: Vec<i32> = batch_ids
            .iter()
            .copied()
            .filter(|id| !known.contains_key(id))
            .collect();
        let Ok(fetched) = tokio::time::timeout(PAGE_DEADLINE, api.batch_statuses(&missing)).await
        else {
            return CentralCounts::TimedOut;
        };
        let mut known = known;
        {
            let mut remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
            for (id, view) in missing.into_iter().zip(fetched) {
                // Only a batch the system knows is remembered: one it does not know yet
                // (not sent, or sent a moment ago) or an API that did not answer is asked
                // again next time.
                if matches!(view, RemoteView::Found(_)) {
                    remembered.insert(id, (now, view.clone()));
                }
                known.insert(id, view);
            }
        }
        CentralCounts::Answered(
            batch_ids
                .iter()
                .map(|id| {
                    known.remove(id).unwrap_or(RemoteView::Unavailable {
                        message: "not asked".into(),
                    })
                })
                .collect(),
        )
    }
}
