//! The optional rustls listener, with a certificate made at test time.

mod common;

use callbridge_runtime::config::TlsFiles;
use common::*;

#[tokio::test]
async fn with_a_certificate_and_key_the_ingress_serves_callbacks_over_tls() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let directory = std::env::temp_dir().join(format!("callbridge-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&directory).unwrap();
    let cert_path = directory.join("tls.crt");
    let key_path = directory.join("tls.key");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let (vhost, mut config) = vhost_and_config().await;
    config.tls = Some(TlsFiles {
        cert_path,
        key_path,
    });
    let app = TestApp::spawn(config).await;
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;
    let trusting = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/callback", app.port);

    let response = trusting
        .post(&url)
        .header(
            "X-Signature",
            python_hmac_hex(SECRET, SEED_PAYLOAD.as_bytes()),
        )
        .body(SEED_PAYLOAD)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    assert!(reader.take().await.is_some());
    // Plain HTTP on the TLS port gets no answer a client could mistake for success.
    let plain = reqwest::Client::new()
        .post(format!("http://localhost:{}/callback", app.port))
        .body(SEED_PAYLOAD)
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    std::fs::remove_dir_all(&directory).unwrap();
}

#[tokio::test]
async fn an_unreadable_certificate_stops_the_start_with_a_clear_error() {
    let (_vhost, mut config) = vhost_and_config().await;
    let missing =
        std::env::temp_dir().join(format!("callbridge-missing-{}.crt", uuid::Uuid::new_v4()));
    config.tls = Some(TlsFiles {
        cert_path: missing.clone(),
        key_path: missing.clone(),
    });

    let error = match callbridge_ingress::Application::build(config).await {
        Ok(_) => panic!("the ingress started without its certificate"),
        Err(error) => format!("{error:#}"),
    };

    assert!(
        error.contains("while reading the TLS certificate"),
        "{error}"
    );
    assert!(error.contains(&missing.display().to_string()), "{error}");
}
