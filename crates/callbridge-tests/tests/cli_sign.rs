//! `callbridge sign`: the printed curl line, run by a shell, is accepted by a real
//! ingress; and the signature is the one the seed's Python `hmac` makes.

#[path = "support/cli_ingress.rs"]
mod cli_ingress;
#[path = "../../callbridge-cli/tests/common/mod.rs"]
mod common;

use callbridge_types::topology::PERSIST_QUEUE;
use cli_ingress::Ingress;
use common::*;

const PAYLOAD: &str = r#"{"event_type":"call_completed","batch_id":7,"phone_number":"9876543210","call_status":"completed","duration":120,"custom_data":{"note":"it's \"quoted\""}}"#;

/// Runs the last line of `callbridge sign`'s output with `sh -c`; returns curl's output.
async fn run_curl_line(sign_output: &std::process::Output) -> String {
    let text = stdout(sign_output);
    let curl = text.lines().last().unwrap();
    assert!(curl.starts_with("curl "), "{text}");
    let ran = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(curl)
        .output()
        .await
        .unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    String::from_utf8_lossy(&ran.stdout).into_owned()
}

#[tokio::test]
async fn the_curl_line_is_accepted_by_the_ingress_with_each_signature_scheme() {
    let vhost = vhost_with_topology().await;
    let ingress = Ingress::spawn(&vhost.amqp_url(), &[CALLBACK_SECRET], true, None).await;
    let env = [
        ("CALLBACK_SECRET_KEY", CALLBACK_SECRET),
        ("CENTRALIZED_CALLING_CALLBACK_URL", ingress.url.as_str()),
    ];

    let x_signature = callbridge(&["sign", "--data", PAYLOAD], &env, None).await;
    assert_success(&x_signature);
    assert!(
        stdout(&x_signature).starts_with("X-Signature: "),
        "{}",
        stdout(&x_signature)
    );
    assert_eq!(run_curl_line(&x_signature).await, r#"{"status":"success"}"#);

    let file = TempFile::with_contents(
        "payload with space.json",
        PAYLOAD.replace("7,", "8,").as_bytes(),
    );
    let from_file = callbridge(&["sign", file.arg(), "--standard"], &env, None).await;
    assert_success(&from_file);
    assert!(
        stdout(&from_file).contains("webhook-signature: v1,"),
        "{}",
        stdout(&from_file)
    );
    assert_eq!(run_curl_line(&from_file).await, r#"{"status":"success"}"#);

    let from_stdin = callbridge(&["sign"], &env, Some(&PAYLOAD.replace("7,", "9,"))).await;
    assert_success(&from_stdin);
    assert_eq!(run_curl_line(&from_stdin).await, r#"{"status":"success"}"#);

    assert_eq!(vhost.queue_depth(PERSIST_QUEUE).await.unwrap(), 3);
}

#[tokio::test]
async fn the_signature_is_pythons_hmac_hexdigest_of_the_exact_bytes() {
    let output = callbridge(
        &[
            "sign",
            "--secret",
            "your_callback_secret_key",
            "--data",
            "{\"event_type\":\"call_started\"}",
        ],
        &[],
        None,
    )
    .await;

    assert_success(&output);
    let python = std::process::Command::new("python3")
        .args([
            "-c",
            "import hmac,hashlib;print(hmac.new(b'your_callback_secret_key',b'{\"event_type\":\"call_started\"}',hashlib.sha256).hexdigest())",
        ])
        .output()
        .unwrap();
    let expected = String::from_utf8(python.stdout).unwrap();
    assert_eq!(
        stdout(&output).lines().next().unwrap(),
        format!("X-Signature: {}", expected.trim())
    );
    assert!(
        stdout(&output).contains("'http://127.0.0.1:8080/callback'"),
        "the local default URL"
    );
    assert!(
        stderr(&output).contains("note: the ingress will answer 400 to this payload (phone_number"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn without_a_secret_the_variable_is_named() {
    let output = callbridge(&["sign", "--data", PAYLOAD], &[], None).await;

    assert!(one_line_failure(&output).contains("CALLBACK_SECRET_KEY"));
}
