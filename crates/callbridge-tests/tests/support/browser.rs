//! A real headless Chromium for the console's browser tests: chromedriver on a free
//! loopback port (Debian's `chromium` and `chromium-driver`, installed by
//! `scripts/ensure-browser.sh`), a WebDriver session (fantoccini), screenshots under
//! `target/console-screenshots/`, and lookups that survive the page's live refresh.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::process::{Child, Command};

pub fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// chromedriver on a free loopback port, killed when the test ends.
pub struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    pub async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver is installed (scripts/ensure-browser.sh, run by make test)");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if http.get(format!("{url}/status")).send().await.is_ok() {
                return Driver { child, url };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not answer on {url}");
    }

    pub async fn browser(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--window-size=1280,860"],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.child.start_kill().ok();
    }
}

/// Waits until `done`, for at most `patience`; reaching it is the failure.
pub async fn wait_for(what: &str, patience: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + patience;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The live refresh replaces a page's table every few hundred milliseconds, so an element
/// found just before may be gone when it is read or clicked: these look it up again.
pub async fn text_of(browser: &Client, css: &str) -> Option<String> {
    for _ in 0..20 {
        if let Ok(element) = browser.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            return Some(text);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// An attribute of the element `css` finds, looked up again if the refresh replaced it.
pub async fn attribute_of(browser: &Client, css: &str, attribute: &str) -> Option<String> {
    for _ in 0..20 {
        if let Ok(element) = browser.find(Locator::Css(css)).await
            && let Ok(value) = element.attr(attribute).await
        {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

pub async fn click(browser: &Client, css: &str) {
    for _ in 0..20 {
        if let Ok(element) = browser.find(Locator::Css(css)).await
            && element.click().await.is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("could not click {css}");
}

/// Whether the page shows no trace of injected markup: no dialog opened, and no element
/// `<img src=x>` or script inside the page's content.
pub async fn assert_no_injected_markup(browser: &Client) {
    assert!(browser.get_alert_text().await.is_err(), "a dialog opened");
    let injected = browser
        .execute(
            "return document.querySelectorAll('img[src=\"x\"], td script, main script').length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(injected, json!(0), "the hostile markup became elements");
}
