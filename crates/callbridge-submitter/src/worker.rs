//! One submission round ([`Submitter::drain`]) and the loop that repeats it
//! ([`Submitter::run`]). The state machine these follow is described in the crate docs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::bail;
use callbridge_runtime::config::{SubmitterConfig, setting_name};
use callbridge_runtime::health::Readiness;
use callbridge_types::centralized_api::{MAX_ITEMS_PER_INSERT, NumberMatch};
use callbridge_types::clock::{SharedClock, SystemClock};
use callbridge_types::erasure::HmacPads;
use futures::StreamExt;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{
    ApiClient, BatchStatusAnswer, DispatchOutcome, InsertOutcome, KeyRejected, QueueItem, Retryable,
};
use crate::backoff::Backoff;
use crate::campaign::{self, Gate, Rules};
use crate::deadline::{self, BatchStatusSaid, ExpiryReport};
use crate::metrics::{self, CampaignLabels};
use crate::reconcile::{self, Verdict};
use crate::store::{self, AttemptFailure, ClaimedRow, Deferral, Release};

/// Readiness condition: false while the API rejects the key.
pub const API_KEY_CONDITION: &str = "api_key";
/// Readiness condition: false while submission rounds fail on the database.
pub const DATABASE_CONDITION: &str = "database";

/// Batches of one claim in flight at once: enough to overlap requests and commits,
/// few enough not to queue for pooled connections.
const CONCURRENT_BATCHES: usize = 4;
/// Rounds one process runs at once, so one round claims while another waits for the
/// API or a commit. Claims are safe to run concurrently (see `store::claim_due_rows`).
const CONCURRENT_ROUNDS: usize = 2;
/// The shortest idle wait, so rows another replica is claiming right now (they look
/// due but cannot be taken) do not make the loop spin.
const MIN_IDLE: Duration = Duration::from_millis(20);
/// How often the queue gauges are recomputed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);
/// How often a paused submitter asks the API whether it accepts the key again, at most.
const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(30);

const MISSING_BATCH_ID: &str = "batch_id is missing: the centralized API takes numbers only as part of a batch; set batch_id and requeue the row";

/// The submitter's settings, checked together.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSettings {
    pub max_attempts: u32,
    pub lease: Duration,
    pub claim_limit: u32,
    pub backoff: Backoff,
    pub poll_interval: Duration,
    pub request_timeout: Duration,
    /// `call_batches.accountcode` of a batch the submitter creates.
    pub accountcode: String,
    /// See [`SubmitterConfig::analyze_after_rows`].
    pub analyze_after_rows: u64,
    /// How a number batch-status lists is compared with a row's.
    pub number_match: NumberMatch,
    /// A submitted call without a terminal callback this long is expired.
    pub callback_deadline: Duration,
    /// How often the loop looks for calls past the deadline.
    pub deadline_check: Duration,
    /// The default region's country calling code: the do-not-call check reads a national
    /// number an application inserted as one of this country.
    pub home_calling_code: Option<u16>,
    /// The erasure key's HMAC blocks: the claim recognises the do-not-call entries of
    /// erased numbers with them. `None` without `lifecycle.erasure_key`.
    pub erased_opt_outs: Option<HmacPads>,
}

impl WorkerSettings {
    /// Refuses a lease that could expire while its request is in flight: another
    /// submitter would then reconcile rows whose request may still land.
    pub fn from_config(config: &SubmitterConfig) -> anyhow::Result<WorkerSettings> {
        if config.lease <= config.api.request_timeout {
            bail!(
                "{} ({} s) must be longer than {} ({} ms): a lease must outlast the request made under it",
                setting_name("submitter.lease_secs"),
                config.lease.as_secs(),
                setting_name("api.request_timeout_ms"),
                config.api.request_timeout.as_millis()
            );
        }
        Ok(WorkerSettings {
            max_attempts: config.max_attempts,
            lease: config.lease,
            claim_limit: config.batch_claim_limit,
            analyze_after_rows: config.analyze_after_rows,
            backoff: Backoff {
                base: config.backoff_base,
                max: config.backoff_max,
            },
            poll_interval: config.poll_interval,
            request_timeout: config.api.request_timeout,
            accountcode: config.api.account_code.clone().unwrap_or_default(),
            number_match: config.batch_status.number_match,
            callback_deadline: config.lifecycle.callback_deadline,
            deadline_check: config.lifecycle.deadline_check,
            home_calling_code: config
                .numbers
                .default_region
                .and_then(|region| region.calling_code()),
            erased_opt_outs: config
                .lifecycle
                .erasure_key
                .as_ref()
                .map(|key| HmacPads::new(key.expose().as_bytes())),
        })
    }
}

/// What one round did, in rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    pub claimed: u64,
    pub submitted: u64,
    pub retried: u64,
    pub failed: u64,
    pub needs_review: u64,
    /// Leased and returned untouched (shutdown, paused key, a batch busy elsewhere, a
    /// batch-status that could not be asked).
    pub released: u64,
    /// Leased and returned untouched because their campaign holds them (window closed,
    /// not started, paused, paced), due when it allows them.
    pub deferred: u64,
    /// Rows of a cancelled campaign marked `cancelled` (never sent).
    pub cancelled: u64,
    /// Rows the claim found on the do-not-call list and marked `suppressed` (never sent).
    pub suppressed: u64,
    /// Rows the claim held for the next day: their numbers had had `max_attempts_per_day`
    /// calls today (see [`crate::daily_cap`]).
    pub held_by_daily_cap: u64,
    /// Submission is paused: the API rejects the key.
    pub paused: bool,
    /// A dispatch-calls request succeeded in this round.
    pub dispatched: bool,
}

impl DrainReport {
    fn absorb(&mut self, other: DrainReport) {
        self.claimed += other.claimed;
        self.submitted += other.submitted;
        self.retried += other.retried;
        self.failed += other.failed;
        self.needs_review += other.needs_review;
        self.released += other.released;
        self.deferred += other.deferred;
        self.cancelled += other.cancelled;
        self.suppressed += other.suppressed;
        self.held_by_daily_cap += other.held_by_daily_cap;
        self.paused |= other.paused;
        self.dispatched |= other.dispatched;
    }
}

/// How a paused submitter finds out that the key works again: by repeating the kind of
/// request that was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    BatchStatus(i32),
    Dispatch,
}

/// Dispatch-calls is owed after numbers were inserted, until a dispatch succeeds.
#[derive(Debug)]
struct DispatchState {
    owed: bool,
    /// A round is sending dispatch-calls now; another round need not.
    in_flight: bool,
    failures: u32,
    retry_at: Option<Instant>,
}

/// What a released row keeps of the evidence that a request may have carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Evidence {
    /// What it had when claimed: nothing happened to it since.
    AsClaimed,
    /// None: it was never sent, or batch-status proved the system holds none of it, and
    /// no request carried it since.
    Resolved,
}

/// What reconciling a batch's unknown rows came to.
enum Reconciliation {
    /// The unknown rows are settled; these (proven not held) may be sent again.
    Resend(Vec<ClaimedRow>),
    /// Nothing of the batch may go out now: release it all, due again after `delay`.
    Postpone { delay: Duration },
}

/// The submitter: claims due rows, sends them, records the outcome. Clones share
/// state; several may run against one queue (in one process or many).
#[derive(Clone)]
pub struct Submitter {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    api: ApiClient,
    settings: WorkerSettings,
    owner: String,
    readiness: Readiness,
    pause: Mutex<Option<Probe>>,
    dispatch: Mutex<DispatchState>,
    /// Rows claimed since `local_call_queue` was last analysed by this submitter.
    claimed_since_analyze: AtomicU64,
    /// Where due times, calling windows, start times and pacing read the time.
    clock: SharedClock,
    campaign_labels: CampaignLabels,
    /// Names of the campaigns seen, for their metrics.
    campaign_names: Mutex<BTreeMap<i32, String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every writer leaves the value consistent, so a panicked one does not matter.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Submitter {
    /// A submitter on `pool` (migrated) talking to `config.api`, reporting on
    /// `readiness`. The lease owner it writes is unique to this value.
    pub fn new(
        pool: PgPool,
        config: &SubmitterConfig,
        readiness: Readiness,
    ) -> anyhow::Result<Submitter> {
        Submitter::with_clock(pool, config, readiness, SystemClock::shared())
    }

    /// [`Submitter::new`] reading the time from `clock`: due times, calling windows,
    /// start times and pacing follow it (leases and backoff waits stay real time).
    pub fn with_clock(
        pool: PgPool,
        config: &SubmitterConfig,
        readiness: Readiness,
        clock: SharedClock,
    ) -> anyhow::Result<Submitter> {
        let settings = WorkerSettings::from_config(config)?;
        let api =
            ApiClient::new(&config.api)?.with_batch_status_reading(config.batch_status.clone());
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "submitter".to_owned());
        let owner = format!(
            "{host}/{}/{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        metrics::set_paused(false);
        Ok(Submitter {
            inner: Arc::new(Inner {
                pool,
                api,
                settings,
                owner,
                readiness,
                pause: Mutex::new(None),
                // A predecessor may have died between an insert and its dispatch.
                dispatch: Mutex::new(DispatchState {
                    owed: true,
                    in_flight: false,
                    failures: 0,
                    retry_at: None,
                }),
                claimed_since_analyze: AtomicU64::new(0),
                clock,
                campaign_labels: CampaignLabels::default(),
                campaign_names: Mutex::new(BTreeMap::new()),
            }),
        })
    }

    /// The `lease_owner` this submitter writes.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    pub fn readiness(&self) -> Readiness {
        self.inner.readiness.clone()
    }

    /// Submission is paused because the API rejects the key.
    pub fn is_paused(&self) -> bool {
        lock(&self.inner.pause).is_some()
    }

    /// One round, run to completion: what tests call to drain the queue synchronously.
    pub async fn drain_once(&self) -> anyhow::Result<DrainReport> {
        self.drain(&CancellationToken::new()).await
    }

    /// One round: when paused, ask whether the key works again; claim due rows; reconcile
    /// and send them batch by batch, recording each outcome; dispatch when owed. Once
    /// `stop` fires, requests in flight finish and are recorded, and rows not sent yet
    /// are released.
    #[tracing::instrument(name = "submission_round", skip_all, fields(owner = %self.inner.owner))]
    pub async fn drain(&self, stop: &CancellationToken) -> anyhow::Result<DrainReport> {
        let result = match self.drain_inner(stop).await {
            Ok(report) => self.analyze_when_idle(&report).await.map(|()| report),
            Err(error) => Err(error),
        };
        // Everything that can fail in a round is a database step; API failures are outcomes.
        match &result {
            Ok(_) => self.inner.readiness.set_ready(DATABASE_CONDITION),
            Err(error) => self.inner.readiness.set_not_ready(
                DATABASE_CONDITION,
                format!("the last submission round failed: {error:#}"),
            ),
        }
        result
    }

    /// Counts the rows `report` claimed; on an idle round (nothing claimed) after at
    /// least `analyze_after_rows` of them, runs `ANALYZE local_call_queue`.
    ///
    /// The planner otherwise keeps the statistics of the last analysis until autovacuum's
    /// next pass (up to a minute or more): typically taken by `callbridge enqueue` while a
    /// whole campaign was waiting. A claim planned for that queue reads every row of a
    /// campaign's batch to find the one new row (20 ms per 60,000), and each round of
    /// each submitter claims more than once.
    async fn analyze_when_idle(&self, report: &DrainReport) -> anyhow::Result<()> {
        let inner = &self.inner;
        let claimed = inner
            .claimed_since_analyze
            .fetch_add(report.claimed, Ordering::Relaxed)
            + report.claimed;
        let threshold = inner.settings.analyze_after_rows;
        if report.claimed > 0 || threshold == 0 || claimed < threshold {
            return Ok(());
        }
        inner.claimed_since_analyze.store(0, Ordering::Relaxed);
        store::analyze_queue(&inner.pool).await?;
        tracing::info!(
            rows_claimed = claimed,
            "queue idle after a large claim volume: analysed local_call_queue"
        );
        Ok(())
    }

    async fn drain_inner(&self, stop: &CancellationToken) -> anyhow::Result<DrainReport> {
        let inner = &self.inner;
        let mut report = DrainReport::default();
        if self.is_paused() && !self.probe_key().await {
            report.paused = true;
            return Ok(report);
        }
        if stop.is_cancelled() {
            return Ok(report);
        }
        let claimed_at = Instant::now();
        let rows = store::claim_due_rows(
            &inner.pool,
            &inner.owner,
            inner.settings.claim_limit,
            inner.settings.lease,
            inner.clock.now(),
            inner.settings.home_calling_code,
            inner.settings.erased_opt_outs.as_ref(),
        )
        .await?;
        report.claimed = rows.len() as u64;

        // Already `suppressed` by the claim itself (their batches refreshed with it), or
        // held for the next day by the daily cap (already `pending` again): not sent.
        let (suppressed, rows): (Vec<ClaimedRow>, Vec<ClaimedRow>) =
            rows.into_iter().partition(|row| row.suppressed);
        if !suppressed.is_empty() {
            let batch_ids: BTreeSet<i32> =
                suppressed.iter().filter_map(|row| row.batch_id).collect();
            tracing::info!(
                rows = suppressed.len(),
                batches = batch_ids.len(),
                "suppressed rows whose numbers are on the do-not-call list"
            );
            metrics::count_suppressed(suppressed.len() as u64);
            report.suppressed = suppressed.len() as u64;
        }
        let (held, rows): (Vec<ClaimedRow>, Vec<ClaimedRow>) =
            rows.into_iter().partition(|row| row.held_until.is_some());
        report.held_by_daily_cap = held.len() as u64;

        let mut batches: BTreeMap<i32, Vec<ClaimedRow>> = BTreeMap::new();
        let mut unbatched = Vec::new();
        for row in rows {
            match row.batch_id {
                Some(batch_id) => batches.entry(batch_id).or_default().push(row),
                None => unbatched.push(row.id),
            }
        }
        if !unbatched.is_empty() {
            let failed = store::record_failed(
                &inner.pool,
                &inner.owner,
                None,
                &unbatched,
                MISSING_BATCH_ID,
                &inner.settings.accountcode,
            )
            .await?;
            tracing::warn!(rows = failed, "failed rows that have no batch_id");
            metrics::count_rows("failed", failed);
            report.failed += failed;
        }

        let mut batches_in_flight = futures::stream::iter(
            batches
                .into_iter()
                .map(|(batch_id, rows)| self.process_batch(batch_id, rows, claimed_at, stop)),
        )
        .buffer_unordered(CONCURRENT_BATCHES);
        let mut first_error = None;
        while let Some(result) = batches_in_flight.next().await {
            match result {
                Ok(batch_report) => report.absorb(batch_report),
                Err(error) => {
                    tracing::error!(
                        error = format!("{error:#}"),
                        "could not record a batch's outcome; its rows stay leased until the lease expires, then are reconciled"
                    );
                    first_error.get_or_insert(error);
                }
            }
        }
        drop(batches_in_flight);

        report.dispatched = self.dispatch_if_owed().await;
        report.paused = self.is_paused();
        match first_error {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }

    /// Reconciles the batch's rows whose outcome is unknown, then sends what may be sent
    /// in requests of at most [`MAX_ITEMS_PER_INSERT`].
    #[tracing::instrument(name = "submit_batch", skip_all, fields(batch_id = batch_id, rows = rows.len(), campaign))]
    async fn process_batch(
        &self,
        batch_id: i32,
        rows: Vec<ClaimedRow>,
        claimed_at: Instant,
        stop: &CancellationToken,
    ) -> anyhow::Result<DrainReport> {
        let inner = &self.inner;
        let mut report = DrainReport::default();
        if stop.is_cancelled() {
            // Not started: every row goes back exactly as it was claimed.
            report.released += self
                .release(&rows, Evidence::AsClaimed, Duration::ZERO)
                .await?;
            return Ok(report);
        }
        let (unknown, mut sendable): (Vec<ClaimedRow>, Vec<ClaimedRow>) =
            rows.into_iter().partition(ClaimedRow::outcome_unknown);
        if !unknown.is_empty() {
            let own_ids: Vec<i32> = unknown.iter().chain(&sendable).map(|row| row.id).collect();
            match self
                .reconcile(batch_id, &unknown, &own_ids, &mut report)
                .await?
            {
                Reconciliation::Resend(rows) => sendable.extend(rows),
                Reconciliation::Postpone { delay } => {
                    report.released += self.release(&unknown, Evidence::AsClaimed, delay).await?;
                    report.released += self.release(&sendable, Evidence::AsClaimed, delay).await?;
                    return Ok(report);
                }
            }
        }

        sendable.sort_by_key(|row| row.id);
        let mut lease_deadline = claimed_at + inner.settings.lease;
        let mut start = 0;
        while start < sendable.len() {
            let remaining = &sendable[start..];
            if stop.is_cancelled() || self.is_paused() {
                report.released += self
                    .release(remaining, Evidence::Resolved, Duration::ZERO)
                    .await?;
                break;
            }
            // Renew while enough lease is left for the request and its commit.
            if lease_deadline.saturating_duration_since(Instant::now())
                < inner.settings.request_timeout + inner.settings.lease / 4
            {
                let ids: Vec<i32> = remaining.iter().map(|row| row.id).collect();
                let renewed_at = Instant::now();
                let renewed =
                    store::renew_lease(&inner.pool, &inner.owner, &ids, inner.settings.lease)
                        .await?;
                if renewed < ids.len() as u64 {
                    tracing::error!(
                        batch_id,
                        lost = ids.len() as u64 - renewed,
                        "the lease on rows of this batch expired before they were sent; another submitter took them over, so this one sends none of them"
                    );
                    report.released += self
                        .release(remaining, Evidence::Resolved, Duration::ZERO)
                        .await?;
                    break;
                }
                lease_deadline = renewed_at + inner.settings.lease;
            }
            let chunk = &remaining[..remaining.len().min(MAX_ITEMS_PER_INSERT)];
            start += chunk.len();
            match self.apply_campaign_rules(chunk, &mut report).await? {
                None => report.absorb(self.send_chunk(batch_id, chunk).await?),
                Some(allowed) if allowed.is_empty() => {}
                Some(allowed) => report.absorb(self.send_chunk(batch_id, &allowed).await?),
            }
        }
        Ok(report)
    }

    /// What the chunk's campaigns allow now, read afresh right before the request, so a
    /// pause or cancel committed since the claim stops rows not sent yet. `None` when no
    /// row has a campaign (the chunk goes as it is); else the rows to send now. The others
    /// go back untouched, due when their campaign allows them (the campaign's other due
    /// rows alike, in one statement), or become `cancelled`.
    async fn apply_campaign_rules(
        &self,
        chunk: &[ClaimedRow],
        report: &mut DrainReport,
    ) -> anyhow::Result<Option<Vec<ClaimedRow>>> {
        let ids: BTreeSet<i32> = chunk.iter().filter_map(|row| row.campaign_id).collect();
        if ids.is_empty() {
            return Ok(None);
        }
        let inner = &self.inner;
        let ids: Vec<i32> = ids.into_iter().collect();
        let rules = campaign::load_rules(&inner.pool, &ids).await?;
        self.remember_names(&rules);
        let now = inner.clock.now();

        let mut allowed = Vec::with_capacity(chunk.len());
        let mut deferrals = Vec::new();
        let mut cancelled_rows = Vec::new();
        let mut cancelled_campaigns = BTreeSet::new();
        // (campaign, whole campaign, zone) → due again at.
        let mut groups: BTreeMap<(i32, bool, Option<String>), chrono::DateTime<chrono::Utc>> =
            BTreeMap::new();
        let mut unslotted: BTreeMap<i32, Vec<&ClaimedRow>> = BTreeMap::new();
        let defer = |row: &ClaimedRow, until, paced_slot_at| Deferral {
            release: Release {
                id: row.id,
                attempt_started_at: row.previous_attempt_started_at,
            },
            until,
            paced_slot_at,
        };
        for row in chunk {
            let Some(rules) = row.campaign_id.and_then(|id| rules.get(&id)) else {
                allowed.push(row.clone());
                continue;
            };
            match rules.gate(row.time_zone.as_deref(), now) {
                Gate::Send => match (rules.pacing, row.paced_slot_at) {
                    (None, _) => allowed.push(row.clone()),
                    // A slot taken earlier: wait for it, or use it while it is fresh.
                    (Some(_), Some(slot)) if slot > now => {
                        deferrals.push(defer(row, slot, Some(slot)));
                    }
                    (Some(pacing), Some(slot)) if now - slot <= pacing.tolerance() => {
                        allowed.push(row.clone());
                    }
                    (Some(_), _) => unslotted.entry(rules.id).or_default().push(row),
                },
                Gate::Defer {
                    until,
                    whole_campaign,
                } => {
                    // Its slot, if it had one, is given up: it is taken again when it may go.
                    deferrals.push(defer(row, until, None));
                    let zone = (!whole_campaign).then(|| row.time_zone.clone()).flatten();
                    groups.insert((rules.id, whole_campaign, zone), until);
                }
                Gate::Cancel => {
                    cancelled_rows.push(row.id);
                    cancelled_campaigns.insert(rules.id);
                }
            }
        }
        for (campaign_id, rows) in unslotted {
            let Some(pacing) = rules.get(&campaign_id).and_then(|rules| rules.pacing) else {
                continue;
            };
            let slots =
                campaign::take_slots(&inner.pool, campaign_id, rows.len(), pacing, now).await?;
            for (row, slot) in rows.into_iter().zip(slots) {
                if slot <= now {
                    allowed.push(row.clone());
                } else {
                    deferrals.push(defer(row, slot, Some(slot)));
                }
            }
        }

        report.deferred += store::defer(&inner.pool, &inner.owner, &deferrals).await?;
        for ((campaign_id, whole_campaign, zone), until) in groups {
            let Some(version) = rules.get(&campaign_id).map(|rules| rules.version.as_str()) else {
                continue;
            };
            let moved = campaign::defer_waiting(
                &inner.pool,
                campaign_id,
                version,
                zone.as_deref(),
                whole_campaign,
                until,
                now,
            )
            .await?;
            tracing::info!(
                campaign = rules.get(&campaign_id).map(|rules| rules.name.as_str()),
                time_zone = zone.as_deref(),
                rows = moved,
                until = %until,
                "campaign rows wait: outside the calling window, before the start time or paused"
            );
            report.deferred += moved;
        }
        if !cancelled_rows.is_empty() {
            let campaigns: Vec<i32> = cancelled_campaigns.into_iter().collect();
            let cancelled =
                campaign::cancel(&inner.pool, &inner.owner, &cancelled_rows, &campaigns).await?;
            tracing::info!(
                rows = cancelled,
                "rows of a cancelled campaign cancelled, never sent"
            );
            report.cancelled += cancelled;
        }
        let names: Vec<&str> = rules.values().map(|rules| rules.name.as_str()).collect();
        tracing::Span::current().record("campaign", names.join(",").as_str());
        allowed.sort_by_key(|row| row.id);
        Ok(Some(allowed))
    }

    fn remember_names(&self, rules: &BTreeMap<i32, Rules>) {
        let mut names = lock(&self.inner.campaign_names);
        for (id, rules) in rules {
            if names.get(id) != Some(&rules.name) {
                names.insert(*id, rules.name.clone());
            }
        }
    }

    /// Counts the accepted numbers of the chunk's campaigns.
    fn count_campaign_sent(&self, chunk: &[ClaimedRow], submitted: u64) {
        if chunk.iter().all(|row| row.campaign_id.is_none()) {
            return;
        }
        let names = lock(&self.inner.campaign_names);
        let mut per_campaign: BTreeMap<&str, u64> = BTreeMap::new();
        for row in chunk
            .iter()
            .take(usize::try_from(submitted).unwrap_or(usize::MAX))
        {
            if let Some(name) = row.campaign_id.and_then(|id| names.get(&id)) {
                *per_campaign.entry(name.as_str()).or_default() += 1;
            }
        }
        for (name, numbers) in per_campaign {
            self.inner.campaign_labels.count_sent(name, numbers);
        }
    }

    /// Asks batch-status which numbers the system holds for the batch and settles the
    /// rows whose outcome is unknown accordingly.
    async fn reconcile(
        &self,
        batch_id: i32,
        unknown: &[ClaimedRow],
        own_ids: &[i32],
        report: &mut DrainReport,
    ) -> anyhow::Result<Reconciliation> {
        let inner = &self.inner;
        if store::batch_leased_elsewhere(&inner.pool, batch_id, own_ids).await? {
            tracing::info!(
                batch_id,
                "other rows of this batch are being sent; reconciling later"
            );
            return Ok(Reconciliation::Postpone {
                delay: inner.settings.poll_interval,
            });
        }
        let ids: Vec<i32> = unknown.iter().map(|row| row.id).collect();
        let answer = inner.api.batch_status(batch_id).await;
        let held = match answer {
            BatchStatusAnswer::KeyRejected(rejected) => {
                self.pause(&rejected, Probe::BatchStatus(batch_id));
                return Ok(Reconciliation::Postpone {
                    delay: Duration::ZERO,
                });
            }
            BatchStatusAnswer::Unavailable(retryable) => {
                metrics::count_reconciliation("unavailable");
                let retry = unknown
                    .iter()
                    .map(|row| row.retry_count)
                    .max()
                    .unwrap_or(0)
                    .max(1);
                let delay = inner
                    .settings
                    .backoff
                    .delay(u32::try_from(retry).unwrap_or(1), retryable.retry_after);
                tracing::warn!(batch_id, rows = ids.len(), error = %retryable.message, retry_in = ?delay,
                    "batch-status could not be asked; rows whose outcome is unknown wait");
                return Ok(Reconciliation::Postpone { delay });
            }
            BatchStatusAnswer::Unreadable(why) => {
                metrics::count_reconciliation("unreadable");
                self.hold_for_review(
                    batch_id,
                    &ids,
                    &format!("batch-status could not be read: {why}"),
                    report,
                )
                .await?;
                return Ok(Reconciliation::Resend(Vec::new()));
            }
            BatchStatusAnswer::Holds(numbers) => numbers,
        };
        // Compared in one spelling, as the configured match says.
        let key = |number: &str| inner.settings.number_match.key(number);
        let held: Vec<String> = held.iter().map(|number| key(number)).collect();
        let mut settled = store::settled_numbers(&inner.pool, batch_id).await?;
        for number in settled
            .submitted
            .iter_mut()
            .chain(&mut settled.under_review)
        {
            *number = key(number);
        }
        let numbers: Vec<String> = unknown.iter().map(|row| key(&row.phone_number)).collect();
        let numbers: Vec<&str> = numbers.iter().map(String::as_str).collect();
        match reconcile::judge(&held, &settled, &numbers) {
            Verdict::AllHeld => {
                metrics::count_reconciliation("all_held");
                let submitted = store::record_submitted(
                    &inner.pool,
                    &inner.owner,
                    batch_id,
                    &ids,
                    &inner.settings.accountcode,
                )
                .await?;
                tracing::info!(
                    batch_id,
                    rows = submitted,
                    "reconciled: the centralized system holds every row whose outcome was unknown"
                );
                metrics::count_rows("submitted", submitted);
                report.submitted += submitted;
                self.owe_dispatch();
                Ok(Reconciliation::Resend(Vec::new()))
            }
            Verdict::NoneHeld => {
                metrics::count_reconciliation("none_held");
                let max_attempts = i32::try_from(inner.settings.max_attempts).unwrap_or(i32::MAX);
                let (exhausted, resend): (Vec<ClaimedRow>, Vec<ClaimedRow>) = unknown
                    .iter()
                    .cloned()
                    .partition(|row| row.retry_count >= max_attempts);
                if let Some(last) = exhausted.iter().max_by_key(|row| row.retry_count) {
                    let error = format!(
                        "gave up after {} attempts (the centralized system holds none of these rows); last error: {}",
                        last.retry_count,
                        last.last_error.as_deref().unwrap_or("none recorded")
                    );
                    let exhausted_ids: Vec<i32> = exhausted.iter().map(|row| row.id).collect();
                    let failed = store::record_failed(
                        &inner.pool,
                        &inner.owner,
                        Some(batch_id),
                        &exhausted_ids,
                        &error,
                        &inner.settings.accountcode,
                    )
                    .await?;
                    tracing::warn!(batch_id, rows = failed, "rows failed: out of attempts");
                    metrics::count_rows("failed", failed);
                    report.failed += failed;
                }
                tracing::info!(
                    batch_id,
                    rows = resend.len(),
                    "reconciled: the centralized system holds none of the rows whose outcome was unknown; sending them again"
                );
                Ok(Reconciliation::Resend(resend))
            }
            Verdict::Ambiguous(why) => {
                metrics::count_reconciliation("ambiguous");
                self.hold_for_review(batch_id, &ids, &why, report).await?;
                Ok(Reconciliation::Resend(Vec::new()))
            }
        }
    }

    /// Returns leased rows to `pending` without counting an attempt, due after `delay`.
    async fn release(
        &self,
        rows: &[ClaimedRow],
        evidence: Evidence,
        delay: Duration,
    ) -> anyhow::Result<u64> {
        let releases: Vec<Release> = rows
            .iter()
            .map(|row| Release {
                id: row.id,
                attempt_started_at: match evidence {
                    Evidence::AsClaimed => row.previous_attempt_started_at,
                    Evidence::Resolved => None,
                },
            })
            .collect();
        store::release(
            &self.inner.pool,
            &self.inner.owner,
            &releases,
            delay,
            self.inner.clock.now(),
        )
        .await
    }

    async fn hold_for_review(
        &self,
        batch_id: i32,
        ids: &[i32],
        reason: &str,
        report: &mut DrainReport,
    ) -> anyhow::Result<()> {
        let inner = &self.inner;
        let held = store::record_needs_review(
            &inner.pool,
            &inner.owner,
            batch_id,
            ids,
            reason,
            &inner.settings.accountcode,
        )
        .await?;
        // The alert: also counted in local_call_queue_rows{queue_status="needs_review"}.
        tracing::error!(
            batch_id,
            rows = held,
            reason,
            "rows need review: it cannot be established whether the centralized system holds them, so they are never resent automatically; compare `callbridge batch {batch_id}` with the centralized system, then requeue or close them"
        );
        metrics::count_rows("needs_review", held);
        report.needs_review += held;
        Ok(())
    }

    /// Sends one insert request and records what it established.
    async fn send_chunk(&self, batch_id: i32, chunk: &[ClaimedRow]) -> anyhow::Result<DrainReport> {
        let inner = &self.inner;
        let mut report = DrainReport::default();
        let ids: Vec<i32> = chunk.iter().map(|row| row.id).collect();
        let items: Vec<QueueItem<'_>> = chunk
            .iter()
            .map(|row| QueueItem {
                phone_number: row.phone_number.trim(),
                custom_data: row.custom_data.as_ref(),
            })
            .collect();
        metrics::record_request_size(items.len());
        let accountcode = &inner.settings.accountcode;
        match inner.api.insert(batch_id, &items).await {
            InsertOutcome::Accepted => {
                let submitted =
                    store::record_submitted(&inner.pool, &inner.owner, batch_id, &ids, accountcode)
                        .await?;
                if submitted < ids.len() as u64 {
                    tracing::error!(
                        batch_id,
                        lost = ids.len() as u64 - submitted,
                        "the lease on accepted rows expired while their request was in flight; their new owner reconciles them"
                    );
                }
                metrics::count_rows("submitted", submitted);
                self.count_campaign_sent(chunk, submitted);
                report.submitted += submitted;
                self.owe_dispatch();
            }
            InsertOutcome::Unknown(retryable) => {
                self.record_attempt_failure(batch_id, chunk, &ids, &retryable, false, &mut report)
                    .await?;
            }
            InsertOutcome::NotAccepted(retryable) => {
                self.record_attempt_failure(batch_id, chunk, &ids, &retryable, true, &mut report)
                    .await?;
            }
            InsertOutcome::Rejected { status, message } => {
                let error =
                    format!("the centralized API refused the batch (HTTP {status}): {message}");
                let failed = store::record_failed(
                    &inner.pool,
                    &inner.owner,
                    Some(batch_id),
                    &ids,
                    &error,
                    accountcode,
                )
                .await?;
                tracing::warn!(batch_id, rows = failed, status, api_message = %message, "rows failed: the API refused them");
                metrics::count_rows("failed", failed);
                report.failed += failed;
            }
            InsertOutcome::KeyRejected(rejected) => {
                self.pause(&rejected, Probe::BatchStatus(batch_id));
                // Refused before any effect: back as they were, no attempt counted.
                report.released += self
                    .release(chunk, Evidence::Resolved, Duration::ZERO)
                    .await?;
            }
        }
        Ok(report)
    }

    async fn record_attempt_failure(
        &self,
        batch_id: i32,
        chunk: &[ClaimedRow],
        ids: &[i32],
        retryable: &Retryable,
        certainly_not_taken: bool,
        report: &mut DrainReport,
    ) -> anyhow::Result<()> {
        let inner = &self.inner;
        let retry = chunk.iter().map(|row| row.retry_count).max().unwrap_or(0) + 1;
        let retry_in = inner
            .settings
            .backoff
            .delay(u32::try_from(retry).unwrap_or(1), retryable.retry_after);
        let counts = store::record_attempt_failure(
            &inner.pool,
            &inner.owner,
            batch_id,
            ids,
            &AttemptFailure {
                certainly_not_taken,
                retry_in,
                error: &retryable.message,
                max_attempts: inner.settings.max_attempts,
                now: inner.clock.now(),
            },
            &inner.settings.accountcode,
        )
        .await?;
        tracing::warn!(
            batch_id,
            rows = ids.len(),
            reason = retryable.reason.as_str(),
            error = %retryable.message,
            outcome_known = certainly_not_taken,
            retry_in = ?retry_in,
            failed = counts.failed,
            "insert attempt failed"
        );
        metrics::count_retries(retryable.reason, counts.retried);
        metrics::count_rows("failed", counts.failed);
        report.retried += counts.retried;
        report.failed += counts.failed;
        Ok(())
    }

    /// Pauses submission: readiness false, one ERROR line for the pause (not one per
    /// refused request).
    fn pause(&self, rejected: &KeyRejected, probe: Probe) {
        let mut pause = lock(&self.inner.pause);
        if pause.is_none() {
            let reason = format!(
                "the centralized API rejects CENTRALIZED_CALLING_API_KEY (HTTP {}: {}); submission is paused",
                rejected.status, rejected.message
            );
            tracing::error!(
                status = rejected.status,
                api_message = %rejected.message,
                "{reason}. Queued rows stay pending and nothing is dialled. Submission resumes by itself as soon as the API accepts the key again; if the key is wrong, set the right one in CENTRALIZED_CALLING_API_KEY (or CENTRALIZED_CALLING_API_KEY_ENCRYPTED with ENCRYPTION_KEY) and restart."
            );
            self.inner
                .readiness
                .set_not_ready(API_KEY_CONDITION, reason);
            metrics::set_paused(true);
        }
        *pause = Some(probe);
    }

    /// Repeats the refused kind of request; resumes when the key is no longer refused.
    /// Returns whether submission may go on.
    #[tracing::instrument(name = "probe_api_key", skip_all)]
    async fn probe_key(&self) -> bool {
        let Some(probe) = *lock(&self.inner.pause) else {
            return true;
        };
        let accepted = match probe {
            Probe::BatchStatus(batch_id) => match self.inner.api.batch_status(batch_id).await {
                BatchStatusAnswer::KeyRejected(_) => false,
                // No answer says nothing about the key.
                BatchStatusAnswer::Unavailable(_) => false,
                BatchStatusAnswer::Holds(_) | BatchStatusAnswer::Unreadable(_) => true,
            },
            Probe::Dispatch => match self.inner.api.dispatch().await {
                DispatchOutcome::KeyRejected(_) => false,
                DispatchOutcome::Dispatched => {
                    lock(&self.inner.dispatch).owed = false;
                    true
                }
                DispatchOutcome::Failed(_) => true,
            },
        };
        if accepted {
            *lock(&self.inner.pause) = None;
            self.inner.readiness.set_ready(API_KEY_CONDITION);
            metrics::set_paused(false);
            tracing::info!("the centralized API accepts the key again; submission resumes");
        }
        accepted
    }

    fn owe_dispatch(&self) {
        let mut dispatch = lock(&self.inner.dispatch);
        dispatch.owed = true;
        dispatch.failures = 0;
        dispatch.retry_at = None;
    }

    /// Sends dispatch-calls when inserted numbers wait for it. Dispatching twice is
    /// harmless (only calls still queued are placed), so failures are simply retried.
    async fn dispatch_if_owed(&self) -> bool {
        {
            let mut dispatch = lock(&self.inner.dispatch);
            let waiting = dispatch.retry_at.is_some_and(|at| Instant::now() < at);
            if !dispatch.owed || dispatch.in_flight || waiting || self.is_paused() {
                return false;
            }
            dispatch.in_flight = true;
            // Numbers inserted from here on need a dispatch of their own.
            dispatch.owed = false;
        }
        let outcome = self.inner.api.dispatch().await;
        let mut dispatch = lock(&self.inner.dispatch);
        dispatch.in_flight = false;
        match outcome {
            DispatchOutcome::Dispatched => {
                dispatch.failures = 0;
                dispatch.retry_at = None;
                true
            }
            DispatchOutcome::Failed(retryable) => {
                dispatch.owed = true;
                dispatch.failures += 1;
                let delay = self
                    .inner
                    .settings
                    .backoff
                    .delay(dispatch.failures, retryable.retry_after);
                dispatch.retry_at = Some(Instant::now() + delay);
                tracing::warn!(error = %retryable.message, retry_in = ?delay, "dispatch-calls failed; retrying");
                false
            }
            DispatchOutcome::KeyRejected(rejected) => {
                dispatch.owed = true;
                drop(dispatch);
                self.pause(&rejected, Probe::Dispatch);
                false
            }
        }
    }

    /// One check of the callback deadline (see [`crate::deadline`]): every open batch
    /// whose numbers went out longer than `lifecycle.callback_deadline` ago (on the
    /// submitter's clock) is reconciled against batch-status, and its calls whose outcome
    /// is still unknown become `expired`. What the loop repeats every
    /// `lifecycle.deadline_check_secs`, and what tests call.
    #[tracing::instrument(name = "deadline_check", skip_all, fields(owner = %self.inner.owner))]
    pub async fn expire_overdue_calls(&self) -> anyhow::Result<ExpiryReport> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let deadline = inner.settings.callback_deadline;
        let cutoff = now - chrono::TimeDelta::from_std(deadline).unwrap_or(chrono::TimeDelta::MAX);
        let mut report = ExpiryReport::default();
        for batch in deadline::overdue_batches(&inner.pool, cutoff).await? {
            report.overdue_batches += 1;
            let said = match inner.api.batch_status(batch.batch_id).await {
                BatchStatusAnswer::Holds(numbers) => BatchStatusSaid::Holds(numbers.len()),
                BatchStatusAnswer::Unreadable(why) => {
                    tracing::info!(batch_id = batch.batch_id, %why, "batch-status could not be read; the outcome of its open calls stays unknown");
                    BatchStatusSaid::Unreadable
                }
                BatchStatusAnswer::Unavailable(retryable) => {
                    tracing::warn!(batch_id = batch.batch_id, error = %retryable.message,
                        "batch-status could not be asked; calls past the callback deadline wait for the next check");
                    report.postponed_batches += 1;
                    continue;
                }
                BatchStatusAnswer::KeyRejected(rejected) => {
                    tracing::warn!(batch_id = batch.batch_id, error = %rejected.message,
                        "batch-status refused the API key; calls past the callback deadline wait for the next check");
                    report.postponed_batches += 1;
                    continue;
                }
            };
            let expired = deadline::expire_batch(
                &inner.pool,
                &batch,
                inner.settings.number_match,
                &said,
                deadline,
                now,
            )
            .await?;
            if expired > 0 {
                tracing::warn!(
                    batch_id = batch.batch_id,
                    calls = expired,
                    deadline_secs = deadline.as_secs(),
                    "calls expired: no terminal callback within the callback deadline"
                );
                metrics::count_expired(expired);
            }
            report.expired += expired;
        }
        Ok(report)
    }

    /// Checks the callback deadline every `lifecycle.deadline_check_secs` until
    /// `shutdown` fires.
    async fn run_deadline_checks(&self, shutdown: &CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.inner.settings.deadline_check) => {}
            }
            if let Err(error) = self.expire_overdue_calls().await {
                tracing::error!(
                    error = format!("{error:#}"),
                    "the callback deadline check failed; trying again at the next one"
                );
            }
        }
    }

    /// Recomputes the queue gauges.
    pub async fn refresh_gauges(&self) -> anyhow::Result<()> {
        let inner = &self.inner;
        let depth = store::queue_depth(&inner.pool).await?;
        metrics::set_queue_depth(&depth);
        metrics::set_oldest_due(store::oldest_due_age(&inner.pool, inner.clock.now()).await?);
        let waiting = campaign::waiting_by_campaign(&inner.pool).await?;
        inner.campaign_labels.set_waiting(&waiting);
        Ok(())
    }

    /// How long an idle loop may sleep: until the next row is due or lease expires, a
    /// dispatch retry, a key probe — at most the poll interval.
    async fn idle_wait(&self) -> Duration {
        let settings = &self.inner.settings;
        if self.is_paused() {
            return settings.poll_interval.min(MAX_PROBE_INTERVAL);
        }
        let clock = &self.inner.clock;
        let mut wait = match store::next_due_in(&self.inner.pool, clock.now()).await {
            Ok((due, lease)) => {
                // A due time is on the submitter's clock, a lease expiry in real time.
                let due = due.map(|seconds| {
                    clock.real_duration(Duration::from_secs_f64(seconds.clamp(0.0, 1e9)))
                });
                let lease = lease.map(|seconds| Duration::from_secs_f64(seconds.clamp(0.0, 1e9)));
                match (due, lease) {
                    (Some(due), Some(lease)) => due.min(lease),
                    (Some(wait), None) | (None, Some(wait)) => wait,
                    (None, None) => settings.poll_interval,
                }
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "could not read when the next row is due"
                );
                settings.poll_interval
            }
        };
        let dispatch = lock(&self.inner.dispatch);
        if dispatch.owed {
            let until = dispatch.retry_at.map_or(Duration::ZERO, |at| {
                at.saturating_duration_since(Instant::now())
            });
            wait = wait.min(until);
        }
        wait.clamp(MIN_IDLE, settings.poll_interval.max(MIN_IDLE))
    }

    /// Repeats rounds until `shutdown` fires, two at a time (one claims while the other
    /// waits for the API or a commit): straight on while rows are claimed, else asleep
    /// until `wake` (a NOTIFY for new rows), the next due time, or the poll interval.
    /// Rounds in progress when `shutdown` fires finish their requests.
    pub async fn run(&self, wake: &Notify, shutdown: &CancellationToken) {
        let loops = (0..CONCURRENT_ROUNDS).map(|index| self.run_rounds(index == 0, wake, shutdown));
        tokio::join!(
            futures::future::join_all(loops),
            self.run_deadline_checks(shutdown)
        );
        tracing::info!("submitter stopped; leases not used were released");
    }

    async fn run_rounds(&self, keeps_gauges: bool, wake: &Notify, shutdown: &CancellationToken) {
        let mut failures: u32 = 0;
        let mut gauges_due = Instant::now();
        while !shutdown.is_cancelled() {
            if keeps_gauges && Instant::now() >= gauges_due {
                if let Err(error) = self.refresh_gauges().await {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "could not refresh the queue gauges"
                    );
                }
                gauges_due = Instant::now() + GAUGE_INTERVAL;
            }
            let wait = match self.drain(shutdown).await {
                Ok(report) => {
                    failures = 0;
                    if report.claimed > 0 && !report.paused {
                        // More may be due: let an idle sibling claim alongside.
                        wake.notify_one();
                        continue;
                    }
                    self.idle_wait().await
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let delay = self.inner.settings.backoff.delay(failures, None);
                    tracing::error!(error = format!("{error:#}"), retry_in = ?delay, "submission round failed");
                    delay
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
