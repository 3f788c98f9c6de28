//! The do-not-call list is honoured at the moment of sending, not only when numbers are
//! loaded: a number put on the list after it was enqueued never reaches the centralized
//! system (the simulator's ground truth), its row becomes `suppressed`, and the other
//! numbers of its batch are sent exactly once. A batch whose numbers are all listed ends.

#[path = "submitter_common/mod.rs"]
mod common;

use callbridge_ops::Actor;
use callbridge_types::phone::{Region, normalise};
use common::{harness, numbers};
use serde_json::json;

/// Puts `raw` on the list as an operator does (`callbridge dnc add`).
async fn opt_out(pool: &sqlx::PgPool, raw: &[&str]) {
    let india = Region::parse("IN").ok();
    let listed: Vec<_> = raw.iter().map(|n| normalise(n, india).unwrap()).collect();
    let outcome = callbridge_ops::dnc::add(
        pool,
        chrono::Utc::now(),
        &Actor::cli("test"),
        &listed,
        Some("opt-out"),
    )
    .await
    .unwrap();
    assert_eq!(outcome.rows_affected, raw.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_listed_after_it_was_enqueued_never_reaches_the_system() {
    let h = harness(json!({})).await;
    // Rows an application inserted: national numbers, no phone_e164.
    let sent = numbers(31, 5);
    h.enqueue(31, &sent).await;
    // And rows as `callbridge enqueue` writes them: the national form with its E.164.
    sqlx::query(
        "INSERT INTO local_call_queue (phone_number, phone_e164, batch_id)
         VALUES ('9876543210', '+919876543210', 32), ('9876543211', '+919876543211', 32)",
    )
    .execute(&h.pool)
    .await
    .unwrap();
    // Listed afterwards, each typed another way than it is stored.
    let listed_app = &sent[1];
    opt_out(&h.pool, &[&format!("+91 {listed_app}"), "098765 43210"]).await;
    let submitter = h.submitter(&[]);

    let report = submitter.drain_once().await.unwrap();

    assert_eq!(report.suppressed, 2, "{report:?}");
    assert_eq!(report.submitted, 5, "{report:?}");
    let kept: Vec<String> = sent.iter().filter(|n| *n != listed_app).cloned().collect();
    h.assert_each_accepted_once(31, &kept);
    h.assert_each_accepted_once(32, &["9876543211".to_owned()]);
    let truth = h.sim.ground_truth(None);
    assert_eq!(truth.accepted_count(31, listed_app), 0);
    assert_eq!(truth.accepted_count(32, "9876543210"), 0);

    let rows = h.rows().await;
    for row in &rows {
        let listed = row.phone_number == *listed_app || row.phone_number == "9876543210";
        let expected = if listed { "suppressed" } else { "submitted" };
        assert_eq!(row.queue_status, expected, "{}", row.phone_number);
        if listed {
            assert!(row.lease_owner.is_none());
            assert!(row.last_error.as_deref().unwrap().contains("do-not-call"));
        }
    }

    // Nothing is left to send, and a second round sends nothing more.
    h.make_due().await;
    let again = submitter.drain_once().await.unwrap();
    assert_eq!(again.claimed, 0, "{again:?}");
    assert_eq!(h.sim.ground_truth(None).totals.accepted_items, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_numbers_are_all_listed_ends_cancelled_without_a_request() {
    let h = harness(json!({})).await;
    sqlx::query("INSERT INTO call_batches (batch_id, accountcode, batch_status) VALUES (33, 'SIM001', 'pending')")
        .execute(&h.pool)
        .await
        .unwrap();
    let listed = numbers(33, 2);
    h.enqueue(33, &listed).await;
    // One of them as an application may write it, in E.164.
    sqlx::query("UPDATE local_call_queue SET phone_number = '+91' || phone_number WHERE id = (SELECT min(id) FROM local_call_queue)")
        .execute(&h.pool)
        .await
        .unwrap();
    opt_out(&h.pool, &[&listed[0], &listed[1]]).await;

    let report = h.submitter(&[]).drain_once().await.unwrap();

    assert_eq!(report.suppressed, 2, "{report:?}");
    assert_eq!(h.inserts(33), 0, "no request carried the batch");
    assert_eq!(h.sim.ground_truth(None).totals.accepted_items, 0);
    assert_eq!(
        h.batch(33).await.unwrap().batch_status.as_deref(),
        Some("cancelled")
    );
}

/// The claim turns rows `suppressed` and refreshes their batch in one transaction: when
/// the refresh cannot commit (here a trigger refuses it; a crash alike), the rows stay
/// waiting, so the next claim suppresses them and ends the batch. Committed apart, the
/// rows would be `suppressed` with their batch `pending` forever: no claim would look at
/// them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppressing_a_batchs_rows_and_ending_the_batch_commit_together() {
    let h = harness(json!({})).await;
    sqlx::query("INSERT INTO call_batches (batch_id, accountcode, batch_status) VALUES (34, 'SIM001', 'pending')")
        .execute(&h.pool)
        .await
        .unwrap();
    let listed = numbers(34, 2);
    h.enqueue(34, &listed).await;
    opt_out(&h.pool, &[&listed[0], &listed[1]]).await;
    for statement in [
        "CREATE FUNCTION refuse_batch_end() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.batch_status = 'cancelled' THEN
                 RAISE EXCEPTION 'the batch refresh fails';
             END IF;
             RETURN NEW;
         END $$",
        "CREATE TRIGGER refuse_batch_end BEFORE UPDATE ON call_batches
         FOR EACH ROW EXECUTE FUNCTION refuse_batch_end()",
    ] {
        sqlx::query(statement).execute(&h.pool).await.unwrap();
    }
    let submitter = h.submitter(&[]);

    let failed = submitter.drain_once().await;

    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(
        h.statuses().await,
        [("pending".to_owned(), 2)].into(),
        "nothing of the failed claim stays"
    );
    assert_eq!(
        h.batch(34).await.unwrap().batch_status.as_deref(),
        Some("pending")
    );

    sqlx::query("DROP TRIGGER refuse_batch_end ON call_batches")
        .execute(&h.pool)
        .await
        .unwrap();
    let report = submitter.drain_once().await.unwrap();

    assert_eq!(report.suppressed, 2, "{report:?}");
    assert_eq!(h.statuses().await, [("suppressed".to_owned(), 2)].into());
    assert_eq!(
        h.batch(34).await.unwrap().batch_status.as_deref(),
        Some("cancelled")
    );
    assert_eq!(h.sim.ground_truth(None).totals.accepted_items, 0);
}
