//! The short chaos run inside `make test`: the real binaries, steady traffic with
//! duplicate and reordered callbacks, and every fault once (the persister killed twice)
//! on the shared servers. It fails when anything acknowledged is lost, stored twice,
//! counted wrong, dialled twice or dead-lettered, or when a fault does not recover.
//!
//! It runs the binaries `cargo nextest run --workspace` (or `cargo test --workspace`)
//! builds for the other crates' tests; run alone, build them first (`cargo build --bins`).

use std::path::PathBuf;

use callbridge_chaos::faults::Fault;
use callbridge_chaos::{Binaries, Scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_chaos_run_loses_doubles_and_miscounts_nothing() {
    let binaries = Binaries::beside_current_exe().expect("the callbridge binaries are built");
    let stale = binaries.stale();
    assert!(
        stale.is_empty(),
        "rebuild the binaries (cargo build --bins): {stale:?}"
    );
    let work_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("chaos-{}", uuid::Uuid::new_v4().simple()));
    let scenario = Scenario::short(7);

    let report = callbridge_chaos::run(&scenario, binaries, &work_dir)
        .await
        .expect("the chaos run could be carried out");
    let markdown = report.to_markdown();
    println!("{markdown}");

    assert!(report.is_clean(), "{markdown}");
    // The run proved something only if every fault happened under real traffic with
    // duplicates and reordering in it.
    let injected: Vec<Fault> = report.faults.iter().map(|record| record.fault).collect();
    assert_eq!(injected, scenario.faults, "{markdown}");
    let figures = &report.reconciliation;
    assert!(figures.callbacks_acknowledged >= 100, "{markdown}");
    assert!(figures.duplicates_sent > 0, "{markdown}");
    assert!(figures.calls_reordered > 0, "{markdown}");
    assert!(report.enqueued.numbers > 0 && figures.numbers_enqueued == report.enqueued.numbers);
}
