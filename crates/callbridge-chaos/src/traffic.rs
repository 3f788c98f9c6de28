//! Steady traffic: a small campaign enqueued with the operator CLI (`callbridge
//! enqueue`) at a fixed interval. The submitter sends each batch to the simulator, which
//! places the calls and sends their callbacks through the ingress.
//!
//! The CLI talks to the database directly (an operator's command, not a service): while
//! Postgres is down it fails and is retried under the same campaign name, which makes a
//! retry after an unanswered success add nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::Command;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::process::{Binaries, run_command};
use crate::sim::ACCOUNT_CODE;

/// Retries of a failing campaign once the run wants traffic to stop (a minute).
const MAX_RETRIES_AFTER_STOP: u32 = 120;

/// How much is enqueued, how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficShape {
    /// Numbers per campaign (one batch each).
    pub numbers_per_batch: u32,
    pub every: Duration,
}

impl TrafficShape {
    /// Numbers per second this shape enqueues.
    pub fn numbers_per_second(&self) -> f64 {
        f64::from(self.numbers_per_batch) / self.every.as_secs_f64()
    }
}

/// What the traffic loop enqueued.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enqueued {
    pub campaigns: u64,
    pub numbers: u64,
    /// `callbridge enqueue` runs that failed and were retried (database down).
    pub failed_attempts: u64,
}

/// Runs the traffic loop until `stop`, then returns what it enqueued. A campaign being
/// retried when `stop` fires is retried for up to a minute more, so a campaign started
/// is normally enqueued.
pub fn start_traffic(
    binaries: &Binaries,
    database_url: String,
    dir: PathBuf,
    shape: TrafficShape,
    stop: CancellationToken,
) -> JoinHandle<Enqueued> {
    let cli = binaries.path("callbridge");
    tokio::spawn(async move {
        let mut enqueued = Enqueued::default();
        let mut ticks = tokio::time::interval(shape.every);
        // After an outage, carry on at the steady rate instead of catching up in a burst.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return enqueued,
                _ = ticks.tick() => {}
            }
            let campaign = enqueued.campaigns;
            let file = match write_campaign(&dir, campaign, shape.numbers_per_batch) {
                Ok(file) => file,
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "could not write a campaign");
                    return enqueued;
                }
            };
            let mut retries_after_stop = 0;
            loop {
                match enqueue(&cli, &database_url, &file, campaign, shape).await {
                    Ok(()) => break,
                    Err(error) if retries_after_stop >= MAX_RETRIES_AFTER_STOP => {
                        // The reconciliation reads the queue, not these counts: a
                        // campaign abandoned here cannot hide a loss.
                        tracing::error!(
                            error = format!("{error:#}"),
                            campaign,
                            "enqueue abandoned"
                        );
                        return enqueued;
                    }
                    Err(error) => {
                        enqueued.failed_attempts += 1;
                        retries_after_stop += u32::from(stop.is_cancelled());
                        tracing::debug!(
                            error = format!("{error:#}"),
                            campaign,
                            "enqueue failed; retrying"
                        );
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            enqueued.campaigns += 1;
            enqueued.numbers += u64::from(shape.numbers_per_batch);
        }
    })
}

/// The phone number of the `index`-th number of the run: unique, and a valid number of
/// the default region (IN) as `callbridge enqueue` checks it (`+9198` and eight digits),
/// so it is enqueued and sent in the national form. The simulator places no real call.
pub fn phone_number(index: u64) -> String {
    format!("+9198{:08}", index % 100_000_000)
}

/// Writes campaign `campaign`'s CSV: its numbers and a customer id as custom data.
fn write_campaign(dir: &Path, campaign: u64, numbers: u32) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("campaign-{campaign:06}.csv"));
    let mut text = String::from("phone_number,customer_id\n");
    for offset in 0..u64::from(numbers) {
        let index = campaign * u64::from(numbers) + offset;
        text.push_str(&format!("{},CUST{index:07}\n", phone_number(index)));
    }
    std::fs::write(&path, text).with_context(|| format!("while writing {}", path.display()))?;
    Ok(path)
}

#[tracing::instrument(skip_all, fields(campaign))]
async fn enqueue(
    cli: &Path,
    database_url: &str,
    file: &Path,
    campaign: u64,
    shape: TrafficShape,
) -> anyhow::Result<()> {
    let output = run_command(
        "callbridge enqueue",
        Command::new(cli)
            .arg("enqueue")
            .arg(file)
            .args(["--campaign", &format!("chaos-{campaign:06}")])
            .args(["--batch-size", &shape.numbers_per_batch.to_string()])
            .args(["--accountcode", ACCOUNT_CODE])
            .args(["--database-url", database_url])
            .arg("--json")
            .env_clear()
            .env("RUST_LOG", "warn"),
    )
    .await?;
    let report: serde_json::Value =
        serde_json::from_str(&output).context("while reading callbridge enqueue --json")?;
    let stored =
        report["enqueued"].as_u64().unwrap_or(0) + report["already_enqueued"].as_u64().unwrap_or(0);
    if stored != u64::from(shape.numbers_per_batch) {
        bail!(
            "callbridge enqueue stored {stored} of {} numbers: {output}",
            shape.numbers_per_batch
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_distinct_e164_numbers() {
        let numbers: std::collections::HashSet<String> = (0..1000).map(phone_number).collect();
        assert_eq!(numbers.len(), 1000);
        assert_eq!(phone_number(42), "+919800000042");
        let india = callbridge_types::phone::Region::parse("IN").ok();
        for index in [0, 42, 99_999_999] {
            let number = phone_number(index);
            assert!(
                callbridge_types::phone::normalise(&number, india).is_ok(),
                "{number}"
            );
        }
    }
}
