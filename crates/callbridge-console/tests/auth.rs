//! Who may see and do what, over plain HTTP against a real console and Postgres: no
//! anonymous page or action, CSRF on every state-changing request, a viewer who reads
//! only, and each action recorded with the console and the session's role as the actor.

mod support;

use reqwest::StatusCode;
use support::{Console, OPERATOR_TOKEN, VIEWER_TOKEN, csrf_in, location, session_cookie};

/// Every page of the console (and its live fragments).
const PAGES: &[&str] = &[
    "/",
    "/campaigns",
    "/campaigns?fragment=1",
    "/review",
    "/review?fragment=1",
];
/// Every state-changing request, with a well-formed form (apart from the CSRF token).
const ACTIONS: &[(&str, &[(&str, &str)])] = &[
    (
        "/campaigns/action",
        &[("campaign", "spring"), ("action", "pause")],
    ),
    ("/review/resolve", &[("id", "1"), ("as", "pending")]),
    ("/logout", &[]),
];

#[tokio::test]
async fn without_a_session_every_page_redirects_to_login_and_every_post_is_401() {
    let console = Console::start(&[]).await;
    console.campaign("spring", 1, 3).await;
    let anonymous = console.anonymous();
    for page in PAGES {
        let response = anonymous.get(page).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "GET {page}");
        assert_eq!(location(&response).as_deref(), Some("/login"), "GET {page}");
    }
    for (path, form) in ACTIONS {
        let response = anonymous.post(path, form).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "POST {path}");
    }
    // A made-up or tampered cookie is no session either.
    let mut forged = console.anonymous();
    forged.cookie = Some("callbridge_console_session=operator.9999999999.00.00".into());
    assert_eq!(
        forged.get("/campaigns").await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        forged
            .post("/campaigns/action", ACTIONS[0].1)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(console.campaign_status("spring").await, "active");
    // The sign-in page itself, the assets and the probes need no session.
    assert_eq!(anonymous.get("/login").await.status(), StatusCode::OK);
    assert_eq!(
        anonymous.get("/assets/console.css").await.status(),
        StatusCode::OK
    );
    assert_eq!(anonymous.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_a_right_one_opens_a_strict_http_only_session() {
    let console = Console::start(&[]).await;
    let anonymous = console.anonymous();
    for wrong in ["", "operator-token-for-tests-000", "nope"] {
        let response = anonymous.post("/login", &[("token", wrong)]).await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "token {wrong:?}"
        );
        assert_eq!(session_cookie(&response), None);
    }
    let response = anonymous.post("/login", &[("token", OPERATOR_TOKEN)]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response).as_deref(), Some("/campaigns"));
    let set_cookie = response
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(
        !set_cookie.contains(OPERATOR_TOKEN),
        "the cookie carries no token"
    );
}

#[tokio::test]
async fn a_post_without_or_with_a_wrong_csrf_token_is_403_and_changes_nothing() {
    let console = Console::start(&[]).await;
    console.campaign("spring", 1, 3).await;
    let operator = console.signed_in(OPERATOR_TOKEN).await;
    let other = console.signed_in(OPERATOR_TOKEN).await;
    let others_token = other.csrf("/campaigns").await;
    for (path, form) in ACTIONS {
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
                "POST {path} with CSRF {wrong:?}"
            );
        }
    }
    assert_eq!(console.campaign_status("spring").await, "active");
    let actions: i64 = sqlx::query_scalar("SELECT count(*) FROM operator_actions")
        .fetch_one(&console.pool)
        .await
        .unwrap();
    assert_eq!(actions, 0);
    // The session still works: the sign-out above was refused too.
    assert_eq!(operator.get("/campaigns").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_operator_pauses_resumes_and_cancels_and_each_is_recorded_as_the_console() {
    let console = Console::start(&[]).await;
    console.campaign("spring", 1, 3).await;
    let operator = console.signed_in(OPERATOR_TOKEN).await;
    let page = operator.page("/campaigns").await;
    assert!(
        page.contains(r#"action="/campaigns/action""#),
        "operator sees the controls"
    );
    let csrf = csrf_in(&page).unwrap();

    let pause = operator
        .post(
            "/campaigns/action",
            &[("csrf", &csrf), ("campaign", "spring"), ("action", "pause")],
        )
        .await;
    assert_eq!(pause.status(), StatusCode::SEE_OTHER);
    assert_eq!(console.campaign_status("spring").await, "paused");
    let resume = operator
        .post(
            "/campaigns/action",
            &[
                ("csrf", &csrf),
                ("campaign", "spring"),
                ("action", "resume"),
            ],
        )
        .await;
    assert_eq!(resume.status(), StatusCode::SEE_OTHER);
    assert_eq!(console.campaign_status("spring").await, "active");

    // Cancelling asks first, and changes nothing until confirmed.
    let ask = operator
        .post(
            "/campaigns/action",
            &[
                ("csrf", &csrf),
                ("campaign", "spring"),
                ("action", "cancel"),
            ],
        )
        .await;
    assert_eq!(ask.status(), StatusCode::OK);
    assert!(
        ask.text()
            .await
            .unwrap()
            .contains("3 waiting numbers will never be sent")
    );
    assert_eq!(console.campaign_status("spring").await, "active");
    let cancel = operator
        .post(
            "/campaigns/action",
            &[
                ("csrf", &csrf),
                ("campaign", "spring"),
                ("action", "cancel"),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(cancel.status(), StatusCode::SEE_OTHER);
    assert_eq!(console.campaign_status("spring").await, "cancelled");
    let cancelled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM local_call_queue WHERE queue_status = 'cancelled'",
    )
    .fetch_one(&console.pool)
    .await
    .unwrap();
    assert_eq!(cancelled, 3);

    let recorded: Vec<(String, String, Option<String>, String)> =
        sqlx::query_as("SELECT action, source, role, actor FROM operator_actions ORDER BY id")
            .fetch_all(&console.pool)
            .await
            .unwrap();
    let actions: Vec<&str> = recorded.iter().map(|row| row.0.as_str()).collect();
    assert_eq!(
        actions,
        ["campaign.pause", "campaign.resume", "campaign.cancel"]
    );
    for (_, source, role, actor) in &recorded {
        assert_eq!(source, "console");
        assert_eq!(role.as_deref(), Some("operator"));
        assert!(actor.starts_with("console operator session "), "{actor}");
    }

    // A refused action (resuming a cancelled campaign) says why, and is 409.
    let refused = operator
        .post(
            "/campaigns/action",
            &[
                ("csrf", &csrf),
                ("campaign", "spring"),
                ("action", "resume"),
            ],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert!(refused.text().await.unwrap().contains("cannot be resumed"));
}

#[tokio::test]
async fn a_viewer_sees_no_button_and_its_post_is_403() {
    let console = Console::start(&[]).await;
    console.campaign("spring", 1, 3).await;
    let viewer = console.signed_in(VIEWER_TOKEN).await;
    let page = viewer.page("/campaigns").await;
    assert!(page.contains("spring"));
    assert!(!page.contains(r#"action="/campaigns/action""#), "{page}");
    assert!(!page.contains("Pause"));
    // Its own, valid CSRF token (from the sign-out form) does not make it an operator.
    let csrf = csrf_in(&page).unwrap();
    for action in ["pause", "cancel"] {
        let response = viewer
            .post(
                "/campaigns/action",
                &[
                    ("csrf", &csrf),
                    ("campaign", "spring"),
                    ("action", action),
                    ("confirm", "yes"),
                ],
            )
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "viewer {action}");
    }
    assert_eq!(console.campaign_status("spring").await, "active");
    // A viewer may sign out, which ends its session.
    let out = viewer.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let removal = session_cookie(&out).unwrap();
    assert_eq!(removal, "callbridge_console_session=");
}

#[tokio::test]
async fn campaign_names_and_figures_are_shown_escaped() {
    let console = Console::start(&[]).await;
    let hostile = r#"<script>alert(1)</script>"><img src=x onerror=alert(2)>"#;
    console.campaign(hostile, 1, 4).await;
    let operator = console.signed_in(OPERATOR_TOKEN).await;
    let page = operator.page("/campaigns").await;
    assert!(!page.contains("<script>alert(1)"), "{page}");
    assert!(!page.contains("<img src=x"), "{page}");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains(r#"data-percent="0""#));
    let headers = operator.get("/campaigns").await;
    let csp = headers
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
}

#[tokio::test]
async fn the_campaigns_page_shows_asr_and_acd_once_calls_were_answered() {
    let console = Console::start(&[]).await;
    console.campaign("spring", 1, 2).await;
    // The persister's maintained counts for the batch: two calls placed, one answered
    // (completed) after 90 s.
    sqlx::query(
        "UPDATE call_batches SET total_calls = 2, completed_calls = 1, failed_calls = 1 WHERE batch_id = 1",
    )
    .execute(&console.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE local_call_queue SET queue_status = 'submitted'")
        .execute(&console.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO call_logs (call_id, accountcode, batch_id, phone_number, call_status, duration)
         VALUES ('a', 'TEST', 1, '9876500001', 'completed', 90),
                ('b', 'TEST', 1, '9876500002', 'busy', 0)",
    )
    .execute(&console.pool)
    .await
    .unwrap();
    let operator = console.signed_in(OPERATOR_TOKEN).await;
    let page = operator.page("/campaigns").await;
    assert!(page.contains(r#"data-percent="100""#), "{page}");
    assert!(page.contains("reached 1"), "{page}");
    let cell = |class: &str| {
        let at = page.find(&format!(r#"class="num {class}">"#)).unwrap();
        page[at..]
            .split('>')
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(cell("asr"), "50 %", "{page}");
}
