//! Hostile HTTP against the ingress: slow headers and bodies, oversized and deeply
//! nested JSON, invalid UTF-8, huge numbers, header injection and request smuggling,
//! and SQL-looking strings in every field. Each attack gets a 4xx (or, for a stalled
//! connection, a 408 and a closed socket), and afterwards the service is still healthy
//! and still accepts a genuine signed callback.

#[path = "../../callbridge-ingress/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use callbridge_runtime::config::Settings;
use callbridge_testkit::db::TestDb;
use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Bounds waiting for something that must happen; reaching the end is the failure, the
/// bound only turns a hang into one.
const PATIENCE: Duration = Duration::from_secs(60);

/// The service answers `/healthz` and still takes a genuine callback.
async fn assert_still_serving(app: &TestApp) {
    assert_eq!(app.get("/healthz").await.status(), 200, "/healthz");
    let call_id = format!("healthy-{}", uuid::Uuid::new_v4());
    let body = json!({
        "event_type": "call_completed",
        "call_id": call_id,
        "phone_number": "9876543210",
    })
    .to_string();
    let response = app.post_signed_fast(&body).await;
    assert_eq!(
        response.status(),
        200,
        "a genuine callback after the attack"
    );
}

fn signed(body: &[u8]) -> String {
    callbridge_types::signature::sign_hex(SECRET.as_bytes(), body)
}

/// Sends raw bytes on a fresh connection and reads until the server closes it or the
/// answer's head (and a `Content-Length` body) is complete. Returns what was read.
async fn raw_exchange(port: u16, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // The server may answer and close before it has read everything (that is the point
    // of several attacks); a failed write is then expected, the answer is what counts.
    let _ = stream.write_all(request).await;
    read_answer(&mut stream).await
}

async fn read_answer(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 8192];
    let read_all = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => answer.extend_from_slice(&buffer[..read]),
            }
            if answer_is_complete(&answer) {
                break;
            }
        }
    };
    tokio::time::timeout(PATIENCE, read_all)
        .await
        .expect("the server answers or closes the connection");
    String::from_utf8_lossy(&answer).into_owned()
}

fn answer_is_complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    length.is_some_and(|length| body.len() >= length)
}

fn status_of(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

fn assert_client_error(answer: &str, case: &str) {
    let status = status_of(answer);
    assert!(
        (400..500).contains(&status),
        "{case}: expected a 4xx, got {answer:?}"
    );
}

#[tokio::test]
async fn slow_headers_get_408_and_do_not_hold_up_other_clients() {
    let (_vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;
    let head = b"POST /callback HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n";

    // Slowloris: many connections, each dripping its request head one byte at a time,
    // forever. A server that restarted its timer on every byte would keep them all.
    let mut attackers = Vec::new();
    for _ in 0..32 {
        let port = app.port;
        attackers.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let drip = async {
                for byte in head.iter().cycle() {
                    if stream.write_all(&[*byte]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            };
            tokio::time::timeout(PATIENCE, drip)
                .await
                .expect("the server cuts off a request head that never ends");
            read_answer(&mut stream).await
        }));
    }
    // Meanwhile, everyone else is served.
    assert_still_serving(&app).await;

    for attacker in attackers {
        let answer = attacker.await.unwrap();
        // Either the 408 arrived, or the server closed without one; never an open socket.
        if !answer.is_empty() {
            assert_eq!(status_of(&answer), 408, "{answer:?}");
        }
    }
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_request_head_that_stops_mid_way_gets_408() {
    let (_vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;

    let answer = raw_exchange(app.port, b"POST /callback HTTP/1.1\r\nHost: localhost\r\n").await;

    assert_eq!(status_of(&answer), 408, "{answer:?}");
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_cut_off_with_408() {
    let (_vhost, config) = vhost_and_config().await;
    let body_timeout = config.body_timeout;
    let app = TestApp::spawn(config).await;
    let body = SEED_PAYLOAD.as_bytes();
    let head = format!(
        "POST /callback HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nX-Signature: {}\r\n\r\n",
        body.len(),
        signed(body)
    );

    // A genuine, signed request whose body stalls after ten bytes and then drips a byte
    // now and then, so an idle timer alone would not catch it: at this pace the body
    // would take minutes, far longer than the body timeout.
    let drip_interval = Duration::from_millis(500);
    assert!(drip_interval * (body.len() as u32) > body_timeout * 4);
    let stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(head.as_bytes()).await.unwrap();
    writer.write_all(&body[..10]).await.unwrap();
    let dripper = tokio::spawn(async move {
        for byte in &body[10..body.len() - 1] {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(drip_interval).await;
        }
    });
    assert_still_serving(&app).await;

    // The answer is read while the client still drips, as a real sender would see it.
    let mut answer = Vec::new();
    let read_until_closed = reader.read_to_end(&mut answer);
    tokio::time::timeout(PATIENCE, read_until_closed)
        .await
        .expect("the server stops waiting for the body and closes the connection")
        .expect("the answer is readable");
    dripper.abort();
    let answer = String::from_utf8_lossy(&answer).into_owned();

    assert_eq!(status_of(&answer), 408, "{answer:?}");
    assert!(
        answer.contains("Request body not received in time"),
        "{answer:?}"
    );
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer:?}"
    );
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn oversized_bodies_are_413_and_never_buffered() {
    let (vhost, config) = vhost_and_config().await;
    let limit = config.max_body_bytes;
    let app = TestApp::spawn(config).await;
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;
    let oversized = format!(
        r#"{{"event_type":"call_completed","call_id":"big","phone_number":"9876543210","custom_data":{{"pad":"{}"}}}}"#,
        "x".repeat(3 * limit)
    );

    // Announced: refused from the headers alone, whatever the signature.
    let head = format!(
        "POST /callback HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        u64::MAX / 2
    );
    assert_eq!(
        status_of(&raw_exchange(app.port, head.as_bytes()).await),
        413
    );

    // Chunked, signed, three times the limit: read and dropped, then 413.
    let mut request = format!(
        "POST /callback HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\
         X-Signature: {}\r\n\r\n",
        signed(oversized.as_bytes())
    )
    .into_bytes();
    for chunk in oversized.as_bytes().chunks(4096) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_exchange(app.port, &request).await;
    assert_eq!(status_of(&answer), 413, "{answer:?}");

    // Many at once, each far over anything the server will read: every connection ends
    // (413 or closed), none is stored, and memory stays bounded by the limit.
    let flood: Vec<_> = (0..16)
        .map(|_| {
            let port = app.port;
            tokio::spawn(async move {
                let mut request = b"POST /callback HTTP/1.1\r\nHost: localhost\r\n\
                                    Transfer-Encoding: chunked\r\n\r\n"
                    .to_vec();
                let chunk = vec![b'['; 64 * 1024];
                for _ in 0..32 {
                    request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    request.extend_from_slice(&chunk);
                    request.extend_from_slice(b"\r\n");
                }
                raw_exchange(port, &request).await
            })
        })
        .collect();
    for attacker in flood {
        let answer = attacker.await.unwrap();
        if !answer.is_empty() {
            assert_eq!(status_of(&answer), 413, "{answer:?}");
        }
    }
    assert_still_serving(&app).await;
    let stored = reader.drain().await;
    assert_eq!(
        stored.len(),
        1,
        "only the health probe's callback is stored"
    );
}

#[tokio::test]
async fn deeply_nested_json_is_400_not_a_stack_overflow() {
    let (vhost, mut config) = vhost_and_config().await;
    // Room for half a million levels of nesting.
    config.max_body_bytes = 1024 * 1024;
    let app = TestApp::spawn(config).await;
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;
    let depth = 500_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects_in_custom_data = format!(
        r#"{{"event_type":"call_completed","call_id":"deep","phone_number":"9876543210","custom_data":{}1{}}}"#,
        r#"{"a":"#.repeat(20_000),
        "}".repeat(20_000)
    );
    let unclosed = "[".repeat(depth);

    for (case, body) in [
        ("nested arrays", arrays),
        ("nested objects in custom_data", objects_in_custom_data),
        ("unclosed nesting", unclosed),
    ] {
        let response = app.post_signed_fast(&body).await;
        assert_eq!(response.status(), 400, "{case}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"], "Invalid callback data", "{case}");
        assert!(
            answer["detail"].as_str().unwrap().starts_with("body:"),
            "{case}: {answer}"
        );
    }
    assert_still_serving(&app).await;
    assert_eq!(reader.drain().await.len(), 1);
}

#[tokio::test]
async fn invalid_utf8_anywhere_is_400() {
    let (vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;
    let cases: [(&str, &[u8]); 7] = [
        (
            "in a value",
            b"{\"event_type\":\"call_completed\",\"call_id\":\"c\",\"phone_number\":\"98765\xff43210\"}",
        ),
        (
            "in a key",
            b"{\"event_type\":\"call_completed\",\"call_id\":\"c\",\"phone_number\":\"9876543210\",\"k\xc3\":1}",
        ),
        (
            "an overlong encoding of '/'",
            b"{\"event_type\":\"call_completed\",\"call_id\":\"c\xc0\xaf\",\"phone_number\":\"9876543210\"}",
        ),
        (
            "an encoded surrogate",
            b"{\"event_type\":\"call_completed\",\"call_id\":\"\xed\xa0\x80\",\"phone_number\":\"9876543210\"}",
        ),
        (
            "an escaped lone surrogate",
            b"{\"event_type\":\"call_completed\",\"call_id\":\"\\ud800\",\"phone_number\":\"9876543210\"}",
        ),
        (
            "UTF-16",
            b"\xff\xfe{\x00\"\x00e\x00\"\x00:\x001\x00}\x00",
        ),
        ("truncated multibyte at the end", b"{\"event_type\":\"call_\xe2\x82"),
    ];
    for (case, body) in cases {
        let response = app
            .post_callback(body.to_vec(), &[("X-Signature", signed(body))])
            .await;
        assert_eq!(response.status(), 400, "{case}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"], "Invalid callback data", "{case}");
    }
    assert_still_serving(&app).await;
    assert_eq!(reader.drain().await.len(), 1);
}

#[tokio::test]
async fn huge_numbers_are_400_naming_the_field() {
    let (vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;
    let thousand_digits = "9".repeat(1000);
    let cases = [
        ("batch_id", "2147483648".to_owned()),
        ("batch_id", "-2147483649".to_owned()),
        ("batch_id", "18446744073709551616".to_owned()),
        // Beyond f64 altogether: not even JSON serde_json can represent.
        ("body", thousand_digits.clone()),
        ("batch_id", format!("\"{thousand_digits}\"")),
        ("duration", "1e300".to_owned()),
        ("duration", "-1".to_owned()),
        ("duration", "\"NaN\"".to_owned()),
        ("duration", "\"Infinity\"".to_owned()),
        ("duration", "2147483647.5".to_owned()),
        ("body", "1e400".to_owned()),
        ("body", format!("-{thousand_digits}e999")),
    ];
    for (field, number) in cases {
        let body = format!(
            r#"{{"event_type":"call_completed","phone_number":"9876543210","call_id":"n","{}":{number}}}"#,
            if field == "body" { "batch_id" } else { field }
        );
        let response = app.post_signed_fast(&body).await;
        assert_eq!(response.status(), 400, "{field} = {number:.40}");
        let answer: Value = response.json().await.unwrap();
        let detail = answer["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(&format!("{field}:")),
            "{field} = {number:.40}: {detail}"
        );
    }
    assert_still_serving(&app).await;
    assert_eq!(reader.drain().await.len(), 1);
}

#[tokio::test]
async fn smuggling_and_header_injection_are_refused_and_never_reflected() {
    let (vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;
    let body = SEED_PAYLOAD;
    let signature = signed(body.as_bytes());
    let length = body.len();
    let huge_header = "a".repeat(64 * 1024);
    let enormous_header = "a".repeat(1024 * 1024);
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();

    let cases: Vec<(&str, String)> = vec![
        (
            "two different Content-Lengths",
            format!(
                "POST /callback HTTP/1.1\r\nHost: h\r\nContent-Length: {length}\r\n\
                 Content-Length: 5\r\nX-Signature: {signature}\r\n\r\n{body}"
            ),
        ),
        (
            "Content-Length and Transfer-Encoding together",
            format!(
                "POST /callback HTTP/1.1\r\nHost: h\r\nContent-Length: {length}\r\n\
                 Transfer-Encoding: chunked\r\nX-Signature: {signature}\r\n\r\n{body}"
            ),
        ),
        (
            "an unknown transfer coding",
            format!(
                "POST /callback HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\
                 X-Signature: {signature}\r\n\r\n0\r\n\r\n"
            ),
        ),
        (
            "a negative Content-Length",
            format!("POST /callback HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n{body}"),
        ),
        (
            "a bare CR inside a header value",
            format!(
                "POST /callback HTTP/1.1\r\nHost: h\r\nX-Signature: {signature}\rX-Injected: yes\r\n\
                 Content-Length: {length}\r\n\r\n{body}"
            ),
        ),
        (
            "obsolete line folding",
            format!(
                "POST /callback HTTP/1.1\r\nHost: h\r\nX-Signature: {signature}\r\n \
                 folded\r\nContent-Length: {length}\r\n\r\n{body}"
            ),
        ),
        (
            "a space before the colon",
            format!(
                "POST /callback HTTP/1.1\r\nHost: h\r\nX-Signature : {signature}\r\n\
                 Content-Length: {length}\r\n\r\n{body}"
            ),
        ),
        (
            "NUL in a header value",
            format!(
                "POST /callback HTTP/1.1\r\nHost: h\r\nX-Signature: {signature}\0\r\n\
                 Content-Length: {length}\r\n\r\n{body}"
            ),
        ),
        (
            "a 64 KiB header",
            format!(
                "POST /callback HTTP/1.1\r\nHost: h\r\nX-Signature: {huge_header}\r\n\
                 Content-Length: {length}\r\n\r\n{body}"
            ),
        ),
        (
            "a 1 MiB header",
            format!(
                "POST /callback HTTP/1.1\r\nHost: h\r\nX-Signature: {enormous_header}\r\n\
                 Content-Length: {length}\r\n\r\n{body}"
            ),
        ),
        (
            "two hundred headers",
            format!(
                "POST /callback HTTP/1.1\r\nHost: h\r\n{many_headers}X-Signature: {signature}\r\n\
                 Content-Length: {length}\r\n\r\n{body}"
            ),
        ),
        (
            "CRLF in the request target",
            format!(
                "POST /callback\r\nX-Injected: yes HTTP/1.1\r\nHost: h\r\n\
                 Content-Length: {length}\r\n\r\n{body}"
            ),
        ),
        (
            "non-ASCII bytes in the signature header",
            format!(
                "POST /callback HTTP/1.1\r\nHost: h\r\nX-Signature: {signature}\u{e9}\r\n\
                 Content-Length: {length}\r\n\r\n{body}"
            ),
        ),
    ];
    for (case, request) in &cases {
        let answer = raw_exchange(app.port, request.as_bytes()).await;
        assert_client_error(&answer, case);
        let head = answer.split("\r\n\r\n").next().unwrap_or_default();
        assert!(
            !head.to_ascii_lowercase().contains("x-injected"),
            "{case}: request bytes reflected into the answer's headers: {head:?}"
        );
        assert!(
            !answer.contains(&huge_header[..64]) && !answer.contains(&signature),
            "{case}: the answer repeats request data"
        );
    }

    // A bare LF ends a header line (RFC 9112 §2.2 lets a server accept it), so this is
    // two headers, not one value holding another: the genuine signature over the exact
    // body is accepted once, and the extra line is never reflected.
    let answer = raw_exchange(
        app.port,
        format!(
            "POST /callback HTTP/1.1\r\nHost: h\r\nX-Signature: {signature}\nX-Injected: yes\r\n\
             Content-Length: {length}\r\n\r\n{body}"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer:?}");
    assert!(!answer.to_ascii_lowercase().contains("x-injected"));

    assert_still_serving(&app).await;
    assert_eq!(
        reader.drain().await.len(),
        2,
        "only the genuine callback and the health probe's reached the queue"
    );
}

#[tokio::test]
async fn a_signature_header_with_injected_lines_does_not_verify() {
    let (_vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;
    let body = SEED_PAYLOAD.as_bytes();
    let genuine = signed(body);

    // The genuine signature followed by junk, or a second X-Signature header: what the
    // ingress verifies is one exact value, never a prefix or "any of them".
    for (case, headers) in [
        (
            "trailing junk",
            vec![("X-Signature", format!("{genuine}; X-Injected: yes"))],
        ),
        (
            "forged first, genuine second",
            vec![
                ("X-Signature", "00".repeat(32)),
                ("X-Signature", genuine.clone()),
            ],
        ),
    ] {
        let response = app.post_callback(body.to_vec(), &headers).await;
        assert_eq!(response.status(), 401, "{case}");
    }
    assert_still_serving(&app).await;
}

/// SQL-looking text for every string field, within each column's width.
fn sql_looking_payload(call_id: &str) -> Value {
    let sql = "'; DROP TABLE call_logs; --";
    json!({
        "event_type": "call_completed",
        "accountcode": "ACME'); DELETE FROM call_batches; --",
        "batch_id": 4242,
        "call_id": call_id,
        "phone_number": "1' OR '1'='1",
        "call_status": "completed",
        "disposition": "x' UNION SELECT 1,2,3 --",
        "duration": 7,
        "start_time": "2024-01-01T10:00:00Z",
        "end_time": "2024-01-01T10:02:00Z",
        "recording_url": format!("https://r.example/{sql}?q=1%27%20OR%201=1"),
        "custom_data": {
            sql: "$1 $$ $tag$ \\x27 E'\\\\' /* */ ;",
            "nested": {"Robert'); DROP TABLE students;--": [sql, "%s %d {}"]},
        },
        "server_code": "$$; SELECT pg_sleep(10); $$",
        "error_message": format!("{sql}\nCOPY call_logs TO PROGRAM 'id'; \\. \\\\"),
    })
}

#[tokio::test]
async fn sql_looking_strings_are_stored_verbatim_never_executed() {
    let db = TestDb::new().await.expect("test database");
    let pool = callbridge_runtime::db::connect_and_migrate(db.url(), 4)
        .await
        .expect("migrated test database");
    let (vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;
    let persister_config = Settings::load_from([
        ("CLIENT_CALLING_DB_URL", db.url().to_owned()),
        ("RABBITMQ_URL", vhost.amqp_url()),
        ("PERSISTER_BIND", "127.0.0.1:0".to_owned()),
        ("CALLBRIDGE__PERSISTER__BATCH_LINGER_MS", "20".to_owned()),
    ])
    .expect("test settings load")
    .persister()
    .expect("test persister settings");
    let persister = callbridge_persister::Persister::build(persister_config)
        .await
        .expect("persister builds");
    let stop_persister = CancellationToken::new();
    let persister = tokio::spawn(persister.run_until_stopped(stop_persister.clone()));

    // The SQL-looking call id, and one whose text is a classic injection too.
    let call_ids = ["call'; DROP TABLE call_events; --", "1; TRUNCATE call_logs"];
    let mut sent = Vec::new();
    for call_id in call_ids {
        let payload = sql_looking_payload(call_id);
        let body = payload.to_string();
        assert_eq!(app.post_signed_fast(&body).await.status(), 200, "{call_id}");
        sent.push(payload);
    }

    let rows = tokio::time::timeout(PATIENCE, async {
        loop {
            let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM call_logs")
                .fetch_one(&pool)
                .await
                .expect("call_logs still exists");
            if stored == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Each row as Postgres itself renders it, to compare field by field.
        sqlx::query_scalar::<_, Value>("SELECT to_jsonb(c) FROM call_logs c ORDER BY call_id")
            .fetch_all(&pool)
            .await
            .unwrap()
    })
    .await
    .expect("both callbacks are stored");

    let mut sent_sorted = sent.clone();
    sent_sorted.sort_by(|a, b| a["call_id"].as_str().cmp(&b["call_id"].as_str()));
    assert_eq!(rows.len(), sent_sorted.len());
    for (row, payload) in rows.iter().zip(&sent_sorted) {
        // Every field as sent; the timestamps are typed columns, checked elsewhere.
        for (field, sent_value) in payload.as_object().unwrap() {
            if ["event_type", "start_time", "end_time"].contains(&field.as_str()) {
                continue;
            }
            assert_eq!(&row[field], sent_value, "call_logs.{field}");
        }
    }
    // The audit trail keeps each payload exactly as sent.
    let payloads: Vec<Value> =
        sqlx::query_scalar("SELECT payload FROM call_events ORDER BY call_id")
            .fetch_all(&pool)
            .await
            .expect("call_events still exists");
    assert_eq!(payloads, sent_sorted);
    // Nothing was executed: every table is still there, the batch row is ours.
    let batches: Vec<(i32, String)> =
        sqlx::query_as("SELECT batch_id, accountcode FROM call_batches")
            .fetch_all(&pool)
            .await
            .expect("call_batches still exists");
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].0, 4242);

    assert_still_serving(&app).await;
    stop_persister.cancel();
    persister.await.unwrap().expect("persister stops cleanly");
}
