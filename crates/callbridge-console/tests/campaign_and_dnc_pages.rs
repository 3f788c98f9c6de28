//! The campaign page and the do-not-call page over plain HTTP, against a real console and
//! Postgres: who may see and change what (401 without a session, 403 without the CSRF
//! token or as a viewer), the do-not-call changes as the CLI makes them and recorded as
//! the console, and the campaign page's batches and outcome chart from the stored rows.

mod support;

use reqwest::StatusCode;
use support::{Console, OPERATOR_TOKEN, VIEWER_TOKEN, csrf_in, location};

/// The new pages' state-changing requests, well formed apart from the CSRF token.
const DNC_ACTIONS: &[(&str, &[(&str, &str)])] = &[
    (
        "/dnc/add",
        &[("number", "9876543210"), ("reason", "opt-out")],
    ),
    ("/dnc/remove", &[("number", "+919876543211")]),
];

async fn listed(console: &Console) -> Vec<(String, Option<String>, String)> {
    sqlx::query_as("SELECT phone_number, reason, source FROM do_not_call ORDER BY phone_number")
        .fetch_all(&console.pool)
        .await
        .unwrap()
}

async fn list_one(console: &Console, number: &str) {
    sqlx::query(
        "INSERT INTO do_not_call (phone_number, reason, source) VALUES ($1, 'kept', 'cli')",
    )
    .bind(number)
    .execute(&console.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn without_a_session_the_new_pages_redirect_and_their_posts_are_401() {
    let console = Console::start(&[]).await;
    console.campaign("spring", 1, 3).await;
    list_one(&console, "+919876543211").await;
    let anonymous = console.anonymous();
    for page in [
        "/campaigns/spring",
        "/campaigns/spring?fragment=1",
        "/dnc",
        "/dnc?number=1",
    ] {
        let response = anonymous.get(page).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "GET {page}");
        assert_eq!(location(&response).as_deref(), Some("/login"), "GET {page}");
    }
    for (path, form) in DNC_ACTIONS {
        let response = anonymous.post(path, form).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "POST {path}");
    }
    assert_eq!(listed(&console).await.len(), 1);
}

#[tokio::test]
async fn do_not_call_posts_without_the_csrf_token_or_from_a_viewer_are_403_and_change_nothing() {
    let console = Console::start(&[]).await;
    list_one(&console, "+919876543211").await;
    let operator = console.signed_in(OPERATOR_TOKEN).await;
    let others_token = console.signed_in(OPERATOR_TOKEN).await.csrf("/dnc").await;
    for (path, form) in DNC_ACTIONS {
        let response = operator.post(path, form).await;
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "POST {path} without CSRF"
        );
        for wrong in ["", "00", others_token.as_str()] {
            let mut with_wrong = form.to_vec();
            with_wrong.push(("csrf", wrong));
            let response = operator.post(path, &with_wrong).await;
            assert_eq!(
                response.status(),
                StatusCode::FORBIDDEN,
                "POST {path} CSRF {wrong:?}"
            );
        }
    }

    // A viewer reads the page and checks numbers, but sees no form, and its POSTs are
    // refused even with its own valid token.
    let viewer = console.signed_in(VIEWER_TOKEN).await;
    let page = viewer.page("/dnc?number=%2B919876543211").await;
    assert!(page.contains(r#"data-listed="true""#), "{page}");
    assert!(!page.contains(r#"action="/dnc/add""#), "{page}");
    assert!(!page.contains(r#"action="/dnc/remove""#), "{page}");
    let csrf = csrf_in(&page).unwrap();
    for (path, form) in DNC_ACTIONS {
        let mut with_token = form.to_vec();
        with_token.push(("csrf", csrf.as_str()));
        let response = viewer.post(path, &with_token).await;
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "viewer POST {path}"
        );
    }
    assert_eq!(
        listed(&console).await,
        [(
            "+919876543211".to_owned(),
            Some("kept".to_owned()),
            "cli".to_owned()
        )]
    );
    let actions: i64 = sqlx::query_scalar("SELECT count(*) FROM operator_actions")
        .fetch_one(&console.pool)
        .await
        .unwrap();
    assert_eq!(actions, 0);
}

#[tokio::test]
async fn an_operator_checks_adds_and_removes_a_number_as_the_cli_does_recorded_as_the_console() {
    let console = Console::start(&[]).await;
    let operator = console.signed_in(OPERATOR_TOKEN).await;
    let page = operator.page("/dnc").await;
    assert!(page.contains(r#"data-total="0""#), "{page}");
    let csrf = csrf_in(&page).unwrap();

    // Not listed yet: the national form reads with the default region (IN).
    let check = operator.page("/dnc?number=98765+43210").await;
    assert!(check.contains(r#"data-listed="false""#), "{check}");
    assert!(
        check.contains("+919876543210</strong> is not on the do-not-call list"),
        "{check}"
    );

    let added = operator
        .post(
            "/dnc/add",
            &[
                ("csrf", &csrf),
                ("number", "98765 43210"),
                ("reason", "asked by <phone>"),
            ],
        )
        .await;
    assert_eq!(added.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&added).as_deref(),
        Some("/dnc?number=%2B919876543210")
    );
    assert_eq!(
        listed(&console).await,
        [(
            "+919876543210".to_owned(),
            Some("asked by <phone>".to_owned()),
            "console".to_owned()
        )]
    );
    let shown = operator.page("/dnc?number=%2B919876543210").await;
    assert!(shown.contains(r#"data-listed="true""#), "{shown}");
    assert!(
        shown.contains("asked by &lt;phone&gt;"),
        "the reason is escaped: {shown}"
    );
    assert!(shown.contains(r#"action="/dnc/remove""#), "{shown}");
    // The list counts it and shows it masked.
    assert!(shown.contains(r#"data-total="1""#), "{shown}");
    assert!(shown.contains("***3210"), "{shown}");

    // A bad number is refused with its one-line reason, and nothing is added.
    let refused = operator
        .post(
            "/dnc/add",
            &[("csrf", &csrf), ("number", "98765x"), ("reason", "")],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let text = refused.text().await.unwrap();
    assert!(
        text.contains("&quot;98765x&quot; is not a phone number: a character other than digits"),
        "{text}"
    );
    assert!(text.contains("nothing was added"), "{text}");
    let bad_check = operator.page("/dnc?number=12").await;
    assert!(
        bad_check.contains(r#"data-listed="invalid""#),
        "{bad_check}"
    );
    assert_eq!(listed(&console).await.len(), 1);

    let removed = operator
        .post(
            "/dnc/remove",
            &[("csrf", &csrf), ("number", "+91 98765 43210")],
        )
        .await;
    assert_eq!(removed.status(), StatusCode::SEE_OTHER);
    assert!(listed(&console).await.is_empty());
    let after = operator.page("/dnc?number=%2B919876543210").await;
    assert!(after.contains(r#"data-listed="false""#), "{after}");

    let recorded: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(
        "SELECT action, source, role, rows_affected FROM operator_actions ORDER BY id",
    )
    .fetch_all(&console.pool)
    .await
    .unwrap();
    assert_eq!(
        recorded,
        [
            (
                "dnc.add".to_owned(),
                "console".to_owned(),
                Some("operator".to_owned()),
                1
            ),
            (
                "dnc.remove".to_owned(),
                "console".to_owned(),
                Some("operator".to_owned()),
                1
            ),
        ]
    );
}

#[tokio::test]
async fn the_do_not_call_page_pages_through_a_long_list_newest_first() {
    let console = Console::start(&[]).await;
    sqlx::query(
        "INSERT INTO do_not_call (phone_number, source, added_at)
         SELECT '+9198765' || lpad(n::text, 5, '0'), 'import list.txt',
                TIMESTAMPTZ '2026-12-01 00:00:00+00' + n * INTERVAL '1 minute'
           FROM generate_series(1, 120) AS n",
    )
    .execute(&console.pool)
    .await
    .unwrap();
    let operator = console.signed_in(OPERATOR_TOKEN).await;
    let first = operator.page("/dnc").await;
    assert!(first.contains(r#"data-total="120""#));
    assert!(first.contains("***0120"), "the newest first: {first}");
    assert!(!first.contains("***0001"));
    assert!(first.contains("page 1 of 3"), "{first}");
    let last = operator.page("/dnc?page=3").await;
    assert!(last.contains("***0001"), "{last}");
    assert!(!last.contains("***0120"));
}

/// Campaign `name` with two batches whose calls ended over two hours: the stored
/// aggregates of each batch match its calls.
async fn campaign_with_calls(console: &Console, name: &str) {
    let id = console.campaign(name, 1, 4).await;
    sqlx::query("INSERT INTO call_batches (batch_id, accountcode, campaign_id, batch_name) VALUES (2, 'TEST', $1, 'second half')")
        .bind(id)
        .execute(&console.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE local_call_queue SET queue_status = 'submitted' WHERE batch_id = 1")
        .execute(&console.pool)
        .await
        .unwrap();
    // Batch 1: three answered at 09:00–09:05, one busy at 10:40. Batch 2: one failed at
    // 11:00 and a call still going (not drawn).
    sqlx::query(
        "INSERT INTO call_logs (call_id, accountcode, batch_id, phone_number, call_status, duration, end_time)
         VALUES ('c1', 'TEST', 1, '9876500001', 'completed', 30, '2026-12-05 09:00:10'),
                ('c2', 'TEST', 1, '9876500002', 'completed', 40, '2026-12-05 09:04:00'),
                ('c3', 'TEST', 1, '9876500003', 'completed', 50, '2026-12-05 09:05:00'),
                ('c4', 'TEST', 1, '9876500004', 'busy', 0, '2026-12-05 10:40:00'),
                ('c5', 'TEST', 2, '9876500005', 'failed', 0, '2026-12-05 11:00:00'),
                ('c6', 'TEST', 2, '9876500006', 'answered', 0, NULL)",
    )
    .execute(&console.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE call_batches SET total_calls = 4, completed_calls = 3, failed_calls = 1,
                answered_seconds = 120, batch_status = 'completed' WHERE batch_id = 1",
    )
    .execute(&console.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE call_batches SET total_calls = 2, completed_calls = 0, failed_calls = 1,
                batch_status = 'in_progress' WHERE batch_id = 2",
    )
    .execute(&console.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn the_campaign_page_shows_its_batches_and_its_outcomes_over_time() {
    let console = Console::start(&[]).await;
    let name = "spring / 2026";
    campaign_with_calls(&console, name).await;
    let viewer = console.signed_in(VIEWER_TOKEN).await;

    // The campaigns list links to the page.
    let list = viewer.page("/campaigns").await;
    assert!(
        list.contains(r#"href="/campaigns/spring%20%2F%202026""#),
        "{list}"
    );
    let page = viewer.page("/campaigns/spring%20%2F%202026").await;
    assert!(page.contains("Campaign spring / 2026"), "{page}");

    // Both batches, newest first, with their local counts.
    let first = page.find(r#"data-batch="2""#).expect("batch 2 is shown");
    let second = page.find(r#"data-batch="1""#).expect("batch 1 is shown");
    assert!(first < second, "newest first");
    let row = &page[second..page[second..].find("</tr>").unwrap() + second];
    assert!(
        row.contains(r#"<td class="num local-total">4</td>"#),
        "{row}"
    );
    assert!(
        row.contains(r#"<td class="num local-completed">3</td>"#),
        "{row}"
    );
    // No API settings: the page says where the centralized counts would be.
    assert!(page.contains("CENTRALIZED_CALLING_BASE_URL"), "{page}");
    assert!(!page.contains("Centralized system"));

    // 09:00:10 to 11:00: two hours in 5-minute buckets, from 09:00 to 11:00 (25 buckets).
    assert!(page.contains(r#"<svg class="chart""#), "{page}");
    assert!(page.contains(r#"data-buckets="25""#), "{page}");
    assert_eq!(page.matches(r#"<g class="bucket""#).count(), 25);
    assert!(
        page.contains(r#"data-label="09:00" data-total="2""#),
        "{page}"
    );
    assert!(
        page.contains(r#"data-label="09:05" data-total="1""#),
        "{page}"
    );
    assert!(
        page.contains(r#"data-label="10:40" data-total="1""#),
        "{page}"
    );
    assert!(
        page.contains(r#"data-label="11:00" data-total="1""#),
        "{page}"
    );
    // The call still going is not an outcome yet.
    assert!(page.contains("answered 3"), "{page}");
    assert!(page.contains("busy 1"));
    assert!(page.contains("failed 1"));
    // The live part alone, for the refresh.
    let fragment = viewer
        .page("/campaigns/spring%20%2F%202026?fragment=1")
        .await;
    assert!(fragment.contains(r#"data-buckets="25""#));
    assert!(!fragment.contains("<nav>"));

    let unknown = viewer.get("/campaigns/autumn").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    // A campaign named like the action route still has its page.
    console.campaign("action", 3, 1).await;
    assert_eq!(
        viewer.get("/campaigns/action").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_campaign_page_says_so_and_still_renders_when_the_centralized_api_cannot_be_reached() {
    // Nothing listens on the port just released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{closed}");
    let console = Console::start(&[
        ("CENTRALIZED_CALLING_BASE_URL", base.as_str()),
        ("CENTRALIZED_CALLING_API_KEY", "a-key"),
    ])
    .await;
    campaign_with_calls(&console, "spring").await;
    let operator = console.signed_in(OPERATOR_TOKEN).await;
    let page = operator.page("/campaigns/spring").await;
    assert!(page.contains("Centralized system"), "{page}");
    assert!(
        page.contains("The centralized system could not be reached"),
        "{page}"
    );
    assert!(
        page.contains(r#"<td class="central-status">unavailable</td>"#),
        "{page}"
    );
    // The local counts are there all the same.
    assert!(
        page.contains(r#"<td class="num local-total">4</td>"#),
        "{page}"
    );
}
