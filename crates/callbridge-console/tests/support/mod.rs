//! A console in the test's own process on port 0, on a fresh migrated database, and a
//! plain HTTP client that keeps its session cookie by hand (no redirects followed, so a
//! test sees each 303 and 401 as the browser would get it).
#![allow(dead_code)]

use callbridge_console::Application;
use callbridge_runtime::config::Settings;
use callbridge_testkit::db::TestDb;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub const OPERATOR_TOKEN: &str = "operator-token-for-tests-0001";
pub const VIEWER_TOKEN: &str = "viewer-token-for-tests-00001";

pub struct Console {
    pub db: TestDb,
    pub pool: PgPool,
    pub base: String,
    shutdown: CancellationToken,
}

impl Console {
    /// A console on a fresh database, with `extra` settings (`NAME`, `value`).
    pub async fn start(extra: &[(&str, &str)]) -> Console {
        let db = TestDb::new().await.unwrap();
        let pool = callbridge_runtime::db::connect_and_migrate(db.url(), 5)
            .await
            .unwrap();
        let mut env = vec![
            ("CLIENT_CALLING_DB_URL", db.url()),
            ("CALLBRIDGE_CONSOLE_TOKEN", OPERATOR_TOKEN),
            ("CALLBRIDGE_CONSOLE_VIEWER_TOKEN", VIEWER_TOKEN),
            ("CONSOLE_BIND", "127.0.0.1:0"),
            // Plain HTTP on loopback: the browser would drop a Secure cookie here.
            ("CALLBRIDGE__CONSOLE__SECURE_COOKIE", "false"),
            ("CALLBRIDGE__CONSOLE__REFRESH_MS", "300"),
        ];
        env.extend_from_slice(extra);
        let config = Settings::load_from(env.iter().copied())
            .unwrap()
            .console()
            .unwrap();
        let application = Application::with_pool(config, pool.clone()).unwrap();
        let base = format!("http://127.0.0.1:{}", application.port());
        let shutdown = CancellationToken::new();
        tokio::spawn(application.run_until_stopped(shutdown.clone()));
        Console {
            db,
            pool,
            base,
            shutdown,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A client with no session.
    pub fn anonymous(&self) -> Client {
        Client {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: self.base.clone(),
            cookie: None,
        }
    }

    /// A client signed in with `token`.
    pub async fn signed_in(&self, token: &str) -> Client {
        let mut client = self.anonymous();
        let response = client.post("/login", &[("token", token)]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        client.cookie = Some(session_cookie(&response).expect("a session cookie"));
        client
    }

    /// Creates campaign `name` with `numbers` pending rows in one batch.
    pub async fn campaign(&self, name: &str, batch_id: i32, numbers: usize) -> i32 {
        let id: i32 = sqlx::query_scalar("INSERT INTO campaigns (name) VALUES ($1) RETURNING id")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO call_batches (batch_id, accountcode, campaign_id) VALUES ($1, 'TEST', $2)",
        )
        .bind(batch_id)
        .bind(id)
        .execute(&self.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO local_call_queue (phone_number, batch_id, campaign_id)
             SELECT '98765' || lpad(n::text, 5, '0'), $1, $2 FROM generate_series(1, $3) AS n",
        )
        .bind(batch_id)
        .bind(id)
        .bind(i32::try_from(numbers).unwrap())
        .execute(&self.pool)
        .await
        .unwrap();
        id
    }

    pub async fn campaign_status(&self, name: &str) -> String {
        sqlx::query_scalar("SELECT status FROM campaigns WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The `name=value` of the session cookie a response sets.
pub fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with("callbridge_console_session="))
        .map(|value| value.split(';').next().unwrap().to_owned())
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    pub cookie: Option<String>,
}

impl Client {
    fn with_cookie(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.cookie {
            Some(cookie) => request.header(COOKIE, cookie),
            None => request,
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.with_cookie(self.http.get(format!("{}{path}", self.base)))
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.with_cookie(self.http.post(format!("{}{path}", self.base)))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// The page at `path` as text (asserting 200).
    pub async fn page(&self, path: &str) -> String {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.text().await.unwrap()
    }

    /// The CSRF token the page at `path` carries in its forms.
    pub async fn csrf(&self, path: &str) -> String {
        let page = self.page(path).await;
        csrf_in(&page).expect("the page carries a CSRF token")
    }
}

/// The value of the first `name="csrf"` field in `html`.
pub fn csrf_in(html: &str) -> Option<String> {
    let at = html.find(r#"name="csrf" value=""#)?;
    let rest = &html[at + r#"name="csrf" value=""#.len()..];
    Some(rest[..rest.find('"')?].to_owned())
}

pub fn location(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(LOCATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}
