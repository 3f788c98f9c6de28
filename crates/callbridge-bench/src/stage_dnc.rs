//! Stage 7: `callbridge dnc import` of a file of 1,000,000 numbers (7b) beside a raw COPY
//! of the same numbers into `do_not_call` (7a, the limit), each in a fresh database; 7c
//! is their ratio. The import normalises every line with the phone number metadata and
//! looks every number up in the list before COPYing the new ones; the raw COPY does
//! neither.
//!
//! The submitter's own figure with a list of 1,000,000 numbers is stage 5's 5a: stage 5
//! fills `do_not_call` with [`fill_list`] before its submitter starts, so every claimed
//! row is looked up in a list of that size.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use sqlx::PgPool;
use tokio::process::Command;

use crate::figures::{DNC_COPY_LIMIT, DNC_IMPORT_RATE, DNC_IMPORT_RATIO};
use crate::procs::{CpuMeter, Group, Selector};
use crate::services::bin_dir;
use crate::{Bench, RunEnv, service_env};

/// Numbers in the import file and in stage 5's list.
pub const LIST_NUMBERS: usize = 1_000_000;

/// The `index`-th listed number: valid Indian mobile numbers (`+9198…`), none of them a
/// number of stage 5's campaign (`97…`).
fn listed_number(index: usize) -> String {
    format!("+9198{:08}", index % 100_000_000)
}

/// Writes the import file: one E.164 number a line.
fn write_file(path: &Path, numbers: usize) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path)
            .with_context(|| format!("while creating {}", path.display()))?,
    );
    for index in 0..numbers {
        writeln!(out, "{}", listed_number(index))?;
    }
    out.flush()?;
    Ok(())
}

/// Fills `do_not_call` with [`LIST_NUMBERS`] numbers in one statement (stage 5's list).
pub async fn fill_list(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO do_not_call (phone_number, source)
         SELECT '+9198' || lpad(n::text, 8, '0'), 'bench' FROM generate_series(0, $1 - 1) AS n",
    )
    .bind(LIST_NUMBERS as i64)
    .execute(pool)
    .await
    .context("while filling do_not_call")?;
    // Vacuumed, as a list that has been in use is: its lookups read the index alone (the
    // visibility map is set), and autovacuum's pass over a million new rows does not fall
    // into the measurement that follows the fill.
    sqlx::query("VACUUM (ANALYZE) do_not_call")
        .execute(pool)
        .await
        .context("while vacuuming do_not_call")?;
    Ok(())
}

pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let file = bench.log_dir.join(format!("dnc-run{}.txt", bench.run));
    write_file(&file, LIST_NUMBERS)?;

    // 7a: the raw COPY of the same numbers (with the one required column the file lacks).
    let env = RunEnv::new(2, bench.options.pg_sslmode.as_deref()).await?;
    let text = std::fs::read_to_string(&file).context("while reading the import file")?;
    let mut lines = Vec::with_capacity(text.len() + LIST_NUMBERS * 6);
    for number in text.lines() {
        lines.extend_from_slice(number.as_bytes());
        lines.extend_from_slice(b"\tbench\n");
    }
    bench.options.settle("dnc copy").await;
    let meter = CpuMeter::start(vec![Group::postgres()]);
    let started = Instant::now();
    let copied = copy_list(&env.pool, &lines).await?;
    let copy_seconds = started.elapsed().as_secs_f64();
    let copy_cpu = meter.stop();
    ensure!(
        copied == LIST_NUMBERS as u64,
        "COPY stored {copied} of {LIST_NUMBERS}"
    );
    let limit = crate::stats::per_second(LIST_NUMBERS, copy_seconds);
    bench.collector.record(DNC_COPY_LIMIT, limit, &copy_cpu);
    drop(env);

    // 7b: the import, as an operator runs it.
    let env = RunEnv::new(2, bench.options.pg_sslmode.as_deref()).await?;
    bench.options.settle("dnc import").await;
    let meter = CpuMeter::start(vec![
        Group::new("cli", Selector::WaitedChildren),
        Group::postgres(),
    ]);
    let started = Instant::now();
    let output = Command::new(bin_dir()?.join("callbridge"))
        .args(["dnc", "import"])
        .arg(&file)
        .arg("--json")
        .envs(service_env(&env, &bench.options))
        .output()
        .await
        .context("while running callbridge dnc import")?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = meter.stop();
    if !output.status.success() {
        bail!(
            "callbridge dnc import failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("while reading the import's JSON")?;
    ensure!(
        report["added"].as_u64() == Some(LIST_NUMBERS as u64),
        "callbridge dnc import added {} of {LIST_NUMBERS}",
        report["added"]
    );
    let rate = crate::stats::per_second(LIST_NUMBERS, seconds);
    tracing::info!(per_second = rate as u64, limit = limit as u64, "dnc import");
    bench.collector.record(DNC_IMPORT_RATE, rate, &cpu);
    bench.collector.record(DNC_IMPORT_RATIO, rate / limit, &[]);
    std::fs::remove_file(&file).ok();

    let placement = "unpinned — every process shares every CPU";
    bench.collector.describe(
        DNC_COPY_LIMIT,
        placement,
        format!(
            "the {LIST_NUMBERS} numbers of the import file (`+9198…`, distinct, one a line) \
             as COPY text lines prepared in memory (with the required `source`), sent by the \
             bench on one connection to `COPY do_not_call (phone_number, source) FROM STDIN` \
             in a fresh migrated database (the list's primary key, its added_at index and its \
             CHECK as deployed); rate = numbers / (COPY statement → its end)."
        ),
    );
    bench.collector.describe(
        DNC_IMPORT_RATE,
        placement,
        "the release `callbridge dnc import FILE --json` on the same file, in a fresh migrated \
         database: it reads and normalises every line, drops repeats, takes the list's write \
         lock, looks each chunk's numbers up on a second connection and COPYs the new ones \
         into do_not_call, then writes its operator_actions row and commits; wall time of the \
         whole command, checked to have added every number. The CLI's two database backends \
         end with it, so their CPU shows under `other`, not `postgres`.",
    );
    bench.collector.describe(
        DNC_IMPORT_RATIO,
        placement,
        "7b divided by 7a of the same run.",
    );
    Ok(())
}

async fn copy_list(pool: &PgPool, lines: &[u8]) -> anyhow::Result<u64> {
    let mut conn = pool.acquire().await.context("while taking a connection")?;
    let mut copy = conn
        .copy_in_raw("COPY do_not_call (phone_number, source) FROM STDIN")
        .await
        .context("while starting COPY")?;
    for chunk in lines.chunks(1 << 20) {
        copy.send(chunk).await.context("while sending COPY data")?;
    }
    copy.finish().await.context("while finishing COPY")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_numbers_are_valid_distinct_and_not_the_campaigns() {
        let india = callbridge_types::phone::Region::parse("IN").ok();
        for index in [0, 1, LIST_NUMBERS - 1] {
            let number = listed_number(index);
            assert!(
                callbridge_types::phone::normalise(&number, india).is_ok(),
                "{number}"
            );
            assert!(!number.starts_with("+9197"));
        }
        assert_ne!(listed_number(0), listed_number(1));
    }
}
