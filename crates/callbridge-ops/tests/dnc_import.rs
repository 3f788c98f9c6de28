//! `dnc::Import` against a real database: it lists exactly the numbers that were not
//! listed (an earlier entry keeps its first reason, source and time), whichever chunk
//! they arrive in; it records itself once; and while it is open no other change to the
//! list can slip in between its look-up of a number and its COPY of it.

mod common;

use std::time::Duration;

use callbridge_ops::dnc::{self, Import, ImportInto};
use callbridge_ops::{Actor, OpsError};
use callbridge_testkit::db::TestDb;
use callbridge_types::phone::{E164, normalise};
use chrono::{DateTime, TimeZone, Utc};
use common::migrated;
use sqlx::{Connection, PgConnection, PgPool};

fn earlier() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap()
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 14, 0, 0).unwrap()
}

fn number(text: &str) -> E164 {
    normalise(text, None).unwrap()
}

async fn connect(db: &TestDb) -> PgConnection {
    PgConnection::connect(db.url()).await.unwrap()
}

/// Where the tests' imports list their numbers: `source`, no reason, at [`now`].
fn into(source: &str) -> ImportInto<'_> {
    ImportInto {
        source,
        reason: None,
        now: now(),
    }
}

/// Offers `chunks` (each a list of numbers, sent as import lines) to `import`, as the
/// CLI's reading thread does; returns what [`Import::copy`] returns.
async fn offer(import: &mut Import<'_>, chunks: &[&[&str]]) -> Result<u64, OpsError> {
    let (sender, received) = tokio::sync::mpsc::channel(chunks.len().max(1));
    for numbers in chunks {
        let lines = numbers.iter().flat_map(|n| format!("{n}\n").into_bytes());
        sender.send(lines.collect()).await.unwrap();
    }
    drop(sender);
    import.copy(received).await
}

/// The whole list: (number, reason, source, added_at).
async fn listed(pool: &PgPool) -> Vec<(String, Option<String>, String, DateTime<Utc>)> {
    sqlx::query_as(
        "SELECT phone_number::text, reason, source, added_at FROM do_not_call ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn only_numbers_not_yet_listed_are_added_whichever_chunk_they_arrive_in() {
    let (db, pool) = migrated().await;
    dnc::add(
        &pool,
        earlier(),
        &Actor::cli("bob"),
        &[number("+442071838750"), number("+919876543210")],
        Some("asked on the phone"),
    )
    .await
    .unwrap();

    let (mut writer, mut lookup) = (connect(&db).await, connect(&db).await);
    let into = ImportInto {
        source: "import optouts.txt",
        reason: Some("march\tlist"),
        now: now(),
    };
    let mut import = dnc::begin_import(&mut writer, &mut lookup, into)
        .await
        .unwrap();
    let offered = offer(
        &mut import,
        &[
            &["+919876543211", "+442071838750"],
            &["+919876543212", "+919876543210", "+919876543213"],
        ],
    )
    .await
    .unwrap();
    assert_eq!(offered, 5, "numbers offered");
    let outcome = import
        .finish(&Actor::cli("alice"), serde_json::json!({ "lines_read": 5 }))
        .await
        .unwrap();
    assert_eq!(
        (outcome.copied, outcome.added, outcome.already_listed),
        (5, 3, 2)
    );

    let list = listed(&pool).await;
    let by_number = |n: &str| list.iter().find(|entry| entry.0 == n).unwrap().clone();
    assert_eq!(list.len(), 5, "{list:?}");
    assert_eq!(
        by_number("+442071838750"),
        (
            "+442071838750".to_owned(),
            Some("asked on the phone".to_owned()),
            "cli".to_owned(),
            earlier()
        ),
        "an entry listed before keeps its first reason, source and time"
    );
    for new in ["+919876543211", "+919876543212", "+919876543213"] {
        assert_eq!(
            by_number(new),
            (
                new.to_owned(),
                Some("march\tlist".to_owned()),
                "import optouts.txt".to_owned(),
                now()
            ),
            "a new entry carries the import's reason (a tab in it kept), source and time"
        );
    }

    let (action, actor, rows, detail): (String, String, i64, serde_json::Value) = sqlx::query_as(
        "SELECT action, actor, rows_affected, detail FROM operator_actions
              WHERE action = 'dnc.import'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (action.as_str(), actor.as_str(), rows),
        ("dnc.import", "alice", 3)
    );
    assert_eq!(detail["already_listed"], 2, "{detail}");
    assert_eq!(detail["copied"], 5, "{detail}");
    assert_eq!(detail["lines_read"], 5, "{detail}");
}

/// Another change to the list waits for the import's end: it cannot add a number after
/// the import looked it up and before the import COPYs it (which would fail the whole
/// import on the list's key), nor remove one the import counted as listed.
#[tokio::test]
async fn a_change_to_the_list_waits_while_an_import_is_open_then_sees_its_numbers() {
    let (db, pool) = migrated().await;
    let (mut writer, mut lookup) = (connect(&db).await, connect(&db).await);
    let mut import = dnc::begin_import(&mut writer, &mut lookup, into("import late.txt"))
        .await
        .unwrap();

    let adding = tokio::spawn({
        let pool = pool.clone();
        async move {
            dnc::add(
                &pool,
                now(),
                &Actor::cli("bob"),
                &[number("+919876543299")],
                None,
            )
            .await
        }
    });
    // The add is seen waiting for the list's lock; had it gone through, it would have
    // finished instead.
    let started = std::time::Instant::now();
    loop {
        assert!(
            !adding.is_finished(),
            "an add went through while the import held the list"
        );
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                             WHERE datname = current_database() AND wait_event_type = 'Lock'
                               AND query LIKE 'INSERT INTO do_not_call%')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the add neither finished nor waited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    offer(&mut import, &[&["+919876543299"]]).await.unwrap();
    let outcome = import
        .finish(&Actor::cli("alice"), serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(outcome.added, 1);

    let added = tokio::time::timeout(Duration::from_secs(10), adding)
        .await
        .expect("the add goes on once the import commits")
        .unwrap()
        .unwrap();
    assert_eq!(added.rows_affected, 0, "the import had listed the number");
    let list = listed(&pool).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].2, "import late.txt");
}

#[tokio::test]
async fn an_abandoned_import_lists_nothing_and_lets_others_go_on() {
    let (db, pool) = migrated().await;
    let (mut writer, mut lookup) = (connect(&db).await, connect(&db).await);
    let mut import = dnc::begin_import(&mut writer, &mut lookup, into("import bad.txt"))
        .await
        .unwrap();
    offer(&mut import, &[&["+919876543201"]]).await.unwrap();
    // As the CLI does when the file had invalid lines and --skip-invalid was not given.
    import.abandon().await.unwrap();

    let outcome = dnc::add(
        &pool,
        now(),
        &Actor::cli("bob"),
        &[number("+919876543201")],
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        outcome.rows_affected, 1,
        "the number was not listed by the import"
    );
    let imports: i64 =
        sqlx::query_scalar("SELECT count(*) FROM operator_actions WHERE action = 'dnc.import'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(imports, 0);
}

#[tokio::test]
async fn a_chunk_that_is_not_text_is_refused() {
    let (db, _pool) = migrated().await;
    let (mut writer, mut lookup) = (connect(&db).await, connect(&db).await);
    let mut import = dnc::begin_import(&mut writer, &mut lookup, into("import x"))
        .await
        .unwrap();
    let (chunks, received) = tokio::sync::mpsc::channel(1);
    chunks.send(vec![b'+', 0xff, b'\n']).await.unwrap();
    drop(chunks);
    let refused = import.copy(received).await.unwrap_err();
    assert!(matches!(refused, OpsError::Refused(_)), "{refused}");
}
