//! The state every request handler and callback sender shares: live knobs, credentials,
//! the store, the hold gate, the random source and the delivery machinery.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use chrono::Utc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use subtle::ConstantTimeEq;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use callbridge_runtime::config::Secret;

use crate::calls::Dialer;
use crate::config::{InvalidKnobs, Knobs, Outcome, SimConfig};
use crate::delivery;
use crate::ground_truth::GroundTruth;
use crate::store::Store;

/// Where callbacks go and the secret they are signed with.
#[derive(Debug, Clone)]
pub struct CallbackTarget {
    pub url: reqwest::Url,
    pub secret: Secret,
}

/// What `reset` returns to.
#[derive(Debug, Clone)]
struct StartSettings {
    knobs: Knobs,
    api_key: Secret,
    callback: CallbackTarget,
}

pub struct SimState {
    pub(crate) dialer: Dialer,
    pub(crate) admin_token: Option<Secret>,
    start: StartSettings,
    knobs: RwLock<Knobs>,
    api_key: RwLock<Secret>,
    callback: RwLock<CallbackTarget>,
    store: Mutex<Store>,
    rng: Mutex<StdRng>,
    /// `true` while `POST /admin/hold` is in force.
    hold: watch::Sender<bool>,
    held_now: AtomicUsize,
    /// Dispatched calls whose callbacks are not all finished.
    pending_calls: watch::Sender<usize>,
    /// Cancelled by `reset`, so old deliveries stop.
    deliveries: Mutex<CancellationToken>,
    pub(crate) http: reqwest::Client,
    pub(crate) send_permits: Semaphore,
    /// Deliveries run on the runtime that spawned the simulator, not on an HTTP worker's.
    runtime: tokio::runtime::Handle,
}

impl SimState {
    /// Must be called inside a tokio runtime; deliveries are spawned on it.
    pub fn new(config: &SimConfig) -> anyhow::Result<Self> {
        let seed = config.seed.unwrap_or_else(rand::random);
        let mut rng = StdRng::seed_from_u64(seed);
        let run_tag = format!("{:06x}", rng.random_range(0..0x100_0000_u32));
        let http = reqwest::Client::builder()
            .user_agent(concat!("callbridge-sim/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let callback = CallbackTarget {
            url: config.callback_url.clone(),
            secret: config.callback_secret.clone(),
        };
        Ok(Self {
            dialer: Dialer {
                accountcode: config.account_code.clone(),
                server_code: config.server_code.clone(),
            },
            admin_token: config.admin_token.clone(),
            start: StartSettings {
                knobs: config.knobs.clone(),
                api_key: config.api_key.clone(),
                callback: callback.clone(),
            },
            knobs: RwLock::new(config.knobs.clone()),
            api_key: RwLock::new(config.api_key.clone()),
            callback: RwLock::new(callback),
            store: Mutex::new(Store::new(run_tag)),
            rng: Mutex::new(rng),
            hold: watch::Sender::new(false),
            held_now: AtomicUsize::new(0),
            pending_calls: watch::Sender::new(0),
            deliveries: Mutex::new(CancellationToken::new()),
            http,
            send_permits: Semaphore::new(config.callback_concurrency),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    pub fn knobs(&self) -> Knobs {
        self.knobs
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Merges a JSON object of knob fields into the live knobs (see [`Knobs::merged_with`]).
    pub fn patch_knobs(&self, patch: &serde_json::Value) -> Result<Knobs, InvalidKnobs> {
        let mut knobs = self
            .knobs
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let merged = knobs.merged_with(patch)?;
        *knobs = merged.clone();
        Ok(merged)
    }

    /// Whether `presented` is the current API key, compared in constant time.
    pub fn key_matches(&self, presented: Option<&[u8]>) -> bool {
        let current = self
            .api_key
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        presented.is_some_and(|presented| bool::from(presented.ct_eq(current.expose().as_bytes())))
    }

    pub fn set_api_key(&self, key: Secret) {
        *self
            .api_key
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = key;
    }

    pub fn callback_target(&self) -> CallbackTarget {
        self.callback
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    pub fn set_callback(&self, url: Option<reqwest::Url>, secret: Option<Secret>) {
        let mut target = self
            .callback
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(url) = url {
            target.url = url;
        }
        if let Some(secret) = secret {
            target.secret = secret;
        }
    }

    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub(crate) fn with_rng<T>(&self, draw: impl FnOnce(&mut StdRng) -> T) -> T {
        draw(&mut self.rng.lock().unwrap_or_else(|poison| poison.into_inner()))
    }

    /// A coin with probability `rate` of heads; 0 and 1 are exact.
    pub(crate) fn chance(&self, rate: f64) -> bool {
        rate >= 1.0 || (rate > 0.0 && self.with_rng(|rng| rng.random::<f64>() < rate))
    }

    /// Rolls for an API fault with the rate `rate_of` picks from the live knobs, spending
    /// one unit of `fault_budget` when it hits.
    pub(crate) fn roll_fault(&self, rate_of: impl FnOnce(&Knobs) -> f64) -> bool {
        let mut knobs = self
            .knobs
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if knobs.fault_budget == Some(0) || !self.chance(rate_of(&knobs)) {
            return false;
        }
        if let Some(budget) = knobs.fault_budget.as_mut() {
            *budget -= 1;
        }
        true
    }

    pub fn hold(&self) {
        self.hold.send_replace(true);
    }

    /// Lets every held request continue and stops holding new ones.
    pub fn release(&self) {
        self.hold.send_replace(false);
    }

    pub fn held_now(&self) -> usize {
        self.held_now.load(Ordering::SeqCst)
    }

    /// Blocks while the hold is in force; returns whether the request was held.
    pub(crate) async fn wait_while_held(&self) -> bool {
        let mut released = self.hold.subscribe();
        if !*released.borrow_and_update() {
            return false;
        }
        // Decrements also when the client goes away and the handler is dropped mid-wait.
        struct HeldGuard<'a>(&'a AtomicUsize);
        impl Drop for HeldGuard<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.held_now.fetch_add(1, Ordering::SeqCst);
        let _guard = HeldGuard(&self.held_now);
        // An error means the sender is gone, i.e. the simulator is shutting down.
        let _ = released.wait_for(|held| !held).await;
        true
    }

    /// Places every queued call of the account: draws each outcome, plans its events and
    /// starts delivering them. Returns the number of calls and the batches they belong to.
    pub(crate) fn dispatch(self: &Arc<Self>) -> (usize, Vec<i32>) {
        let knobs = self.knobs();
        let total_weight = knobs.outcome_mix.total_weight();
        let dispatched = self.store().dispatch_queued(&self.dialer.accountcode, || {
            let ticket = self.with_rng(|rng| rng.random_range(0..total_weight));
            (
                knobs.outcome_mix.pick(ticket),
                self.chance(knobs.reorder_rate),
            )
        });
        let now = Utc::now();
        let cancel = self
            .deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self.pending_calls
            .send_modify(|pending| *pending += dispatched.len());
        let mut batch_ids: Vec<i32> = dispatched.iter().map(|(_, call)| call.batch_id).collect();
        batch_ids.dedup();
        let count = dispatched.len();
        for (call_ref, call) in dispatched {
            let outcome = call.outcome.unwrap_or(crate::config::Outcome::Completed);
            let plan = self.with_rng(|rng| self.dialer.plan(&call, outcome, now, rng));
            let delivery = delivery::deliver_call(
                Arc::clone(self),
                call_ref,
                plan,
                call.reordered,
                cancel.clone(),
            );
            self.runtime.spawn(delivery);
        }
        (count, batch_ids)
    }

    pub(crate) fn call_delivery_finished(&self) {
        self.pending_calls
            .send_modify(|pending| *pending = pending.saturating_sub(1));
    }

    pub fn pending_calls(&self) -> usize {
        *self.pending_calls.borrow()
    }

    /// Waits until every dispatched call's callbacks are finished; `false` on timeout.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let mut pending = self.pending_calls.subscribe();
        tokio::time::timeout(timeout, pending.wait_for(|count| *count == 0))
            .await
            .is_ok()
    }

    /// Replaces the per-number script of outcomes (see `Store::set_script`).
    pub fn set_script(&self, script: BTreeMap<String, Vec<Outcome>>) {
        self.store().set_script(script);
    }

    /// What the script still holds per number.
    pub fn script(&self) -> BTreeMap<String, Vec<Outcome>> {
        self.store().script()
    }

    pub fn ground_truth(&self, batch_id: Option<i32>) -> GroundTruth {
        let mut truth = self.store().ground_truth(batch_id);
        truth.held_now = self.held_now();
        truth.pending_calls = self.pending_calls();
        truth
    }

    /// Forgets every batch, call and request, stops running deliveries, releases held
    /// requests and restores the start-up knobs, API key and callback target.
    pub fn reset(&self) {
        let old = std::mem::replace(
            &mut *self.deliveries.lock().unwrap_or_else(|p| p.into_inner()),
            CancellationToken::new(),
        );
        old.cancel();
        self.store().reset();
        *self.knobs.write().unwrap_or_else(|p| p.into_inner()) = self.start.knobs.clone();
        self.set_api_key(self.start.api_key.clone());
        *self.callback.write().unwrap_or_else(|p| p.into_inner()) = self.start.callback.clone();
        self.release();
    }

    /// Stops every running delivery (shutdown).
    pub(crate) fn cancel_deliveries(&self) {
        self.deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cancel();
    }
}
