//! The short cluster run inside `make test`: three private RabbitMQ nodes clustered on
//! this machine (root), the real binaries given all three addresses, steady traffic with
//! duplicate and reordered callbacks, and the node leading `callbridge.persist` killed
//! once. It fails when anything acknowledged is lost, stored twice or dead-lettered, when
//! the pipeline does not recover, or when the ingress does not accept callbacks again
//! within 8 s of the kill.
//!
//! Like short_run.rs, it runs the binaries the workspace build makes (`cargo build
//! --bins` first when run alone).

use std::path::PathBuf;

use callbridge_chaos::faults::Fault;
use callbridge_chaos::scenario::CLUSTER_ACCEPTING_WITHIN;
use callbridge_chaos::{Binaries, Scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_persist_leader_under_traffic_loses_and_doubles_nothing() {
    let binaries = Binaries::beside_current_exe().expect("the callbridge binaries are built");
    let stale = binaries.stale();
    assert!(
        stale.is_empty(),
        "rebuild the binaries (cargo build --bins): {stale:?}"
    );
    let work_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("chaos-cluster-{}", uuid::Uuid::new_v4().simple()));
    let scenario = Scenario::cluster_short(7);

    let report = callbridge_chaos::run(&scenario, binaries, &work_dir)
        .await
        .expect("the cluster run could be carried out");
    let markdown = report.to_markdown();
    println!("{markdown}");

    assert!(report.is_clean(), "{markdown}");
    let [kill] = report.faults.as_slice() else {
        panic!("one fault expected: {markdown}");
    };
    assert_eq!(kill.fault, Fault::KillPersistLeader, "{markdown}");
    assert!(kill.problem.is_none(), "{markdown}");
    let accepting = kill.accepting_after.expect("the ingress accepted again");
    assert!(accepting <= CLUSTER_ACCEPTING_WITHIN, "{markdown}");
    let figures = &report.reconciliation;
    assert!(figures.callbacks_acknowledged >= 50, "{markdown}");
    assert_eq!(figures.callbacks_lost, 0, "{markdown}");
    assert_eq!(figures.events_stored_twice, 0, "{markdown}");
    assert_eq!(figures.dead_lettered, 0, "{markdown}");
}
