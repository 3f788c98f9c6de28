//! Configuration: the seed's variables verbatim, layering, strict booleans, URL forms, secrets,
//! the Fernet-encrypted API key, and one clear line per missing or malformed setting.
//! Every test passes its own environment to `Settings::load_from`; none touches the
//! process environment (tests run in parallel).

use std::path::PathBuf;
use std::process::Command;

use callbridge_runtime::config::{
    ConfigError, LogFormat, OtlpProtocol, Settings, decrypt_api_key, encrypt_api_key,
};

/// The seed's "Configuration Changes" block, as a client would paste it.
fn seed_env() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "CENTRALIZED_CALLING_BASE_URL",
            "https://centralized-calling.example.com",
        ),
        ("CENTRALIZED_CALLING_API_KEY", "your_api_key_here"),
        (
            "CENTRALIZED_CALLING_CALLBACK_URL",
            "https://your-domain.com/callback",
        ),
        (
            "CLIENT_CALLING_DB_URL",
            "postgresql://user:pass@host:5432/client_calling_db",
        ),
        (
            "CLIENT_CALLING_ASYNC_DB_URL",
            "postgresql+asyncpg://user:pass@host:5432/client_calling_db",
        ),
        ("CALLBACK_SECRET_KEY", "your_callback_secret_key"),
        ("CALLBACK_VERIFICATION_ENABLED", "true"),
    ]
}

fn without(env: &[(&'static str, &'static str)], name: &str) -> Vec<(&'static str, &'static str)> {
    env.iter()
        .filter(|(key, _)| *key != name)
        .copied()
        .collect()
}

fn with(
    env: &[(&'static str, &'static str)],
    name: &'static str,
    value: &'static str,
) -> Vec<(&'static str, &'static str)> {
    let mut env = without(env, name);
    env.push((name, value));
    env
}

fn load(env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::load_from(env.iter().copied())
}

fn error_line(result: Result<impl std::fmt::Debug, ConfigError>) -> String {
    let line = result
        .expect_err("expected a configuration error")
        .to_string();
    assert!(!line.contains('\n'), "error is not one line: {line}");
    line
}

struct Fixture {
    key: String,
    plaintext: String,
    token: String,
}

fn fernet_fixture() -> Fixture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fernet.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    Fixture {
        key: json["key"].as_str().unwrap().to_owned(),
        plaintext: json["plaintext"].as_str().unwrap().to_owned(),
        token: json["token"].as_str().unwrap().to_owned(),
    }
}

/// A config file unique to this test, removed when dropped.
struct TempConfigFile(PathBuf);

impl TempConfigFile {
    fn new(name: &str, contents: &str) -> TempConfigFile {
        let path = std::env::temp_dir().join(format!(
            "callbridge-config-test-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(&path, contents).unwrap();
        TempConfigFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn seed_variables_work_verbatim() {
    let settings = load(&seed_env()).unwrap();

    let submitter = settings.submitter().unwrap();
    assert_eq!(
        submitter.api.base_url.as_str(),
        "https://centralized-calling.example.com/"
    );
    assert_eq!(submitter.api.api_key.expose(), "your_api_key_here");
    assert_eq!(
        submitter.api.callback_url.unwrap().as_str(),
        "https://your-domain.com/callback"
    );
    assert_eq!(
        submitter.database.url.expose(),
        "postgres://user:pass@host:5432/client_calling_db"
    );

    let ingress = settings.ingress().unwrap();
    assert!(ingress.verification_enabled);
    let secrets: Vec<&str> = ingress.secrets.iter().map(|s| s.expose()).collect();
    assert_eq!(secrets, ["your_callback_secret_key"]);
    assert_eq!(ingress.bind, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(ingress.max_body_bytes, 64 * 1024);
}

#[test]
fn spec_added_variables_work_verbatim() {
    let env = [
        ("RABBITMQ_URL", "amqps://u:p@broker.internal:5671/calls"),
        ("CENTRALIZED_CALLING_ACCOUNT_CODE", "ACME01"),
        ("INGRESS_BIND", "127.0.0.1:18080"),
        ("PERSISTER_BIND", "127.0.0.1:19101"),
        ("SUBMITTER_BIND", "127.0.0.1:19102"),
        ("RUST_LOG", "callbridge=debug,info"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4317"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_SERVICE_NAME", "callbridge-eu"),
        ("CALLBACK_VERIFICATION_ENABLED", "false"),
    ];
    let settings = load(&env).unwrap();
    let ingress = settings.ingress().unwrap();
    assert_eq!(
        ingress.amqp_url.expose(),
        "amqps://u:p@broker.internal:5671/calls"
    );
    assert_eq!(ingress.default_accountcode.as_deref(), Some("ACME01"));
    assert_eq!(ingress.bind, "127.0.0.1:18080".parse().unwrap());
    assert_eq!(
        settings.persister().unwrap().bind,
        "127.0.0.1:19101".parse().unwrap()
    );
    assert_eq!(settings.submitter.bind, "127.0.0.1:19102");
    assert_eq!(settings.telemetry.log_filter, "callbridge=debug,info");
    assert_eq!(
        settings.telemetry.otlp_endpoint.as_deref(),
        Some("http://jaeger:4317")
    );
    assert_eq!(settings.telemetry.otlp_protocol, OtlpProtocol::Grpc);
    assert_eq!(
        settings.telemetry.service_name.as_deref(),
        Some("callbridge-eu")
    );
}

/// The simulator reads its `SIM_*` variables itself; they sit in the same environment as
/// the settings every binary loads (the simulator loads them too, for telemetry), so they
/// must neither fail the load nor set anything here.
#[test]
fn simulator_variables_are_left_to_the_simulator() {
    let env = [
        ("SIM_BIND", "not an address"),
        ("SIM_API_KEY", "simapikey"),
        ("SIM_CALLBACK_URL", "http://127.0.0.1:8080/callback"),
        ("SIM_CALLBACK_SECRET", "simsecret"),
    ];
    assert_eq!(load(&env).unwrap(), Settings::default());
}

#[test]
fn defaults_follow_the_spec() {
    let settings = load(&[]).unwrap();
    let persister = settings.persister().unwrap();
    assert_eq!(
        persister.database.url.expose(),
        "postgres://postgres@127.0.0.1:5432/client_calling_db"
    );
    assert_eq!(
        persister.amqp_url.expose(),
        "amqp://guest:guest@127.0.0.1:5672/%2f"
    );
    assert_eq!(persister.bind, "0.0.0.0:9101".parse().unwrap());
    assert!(!persister.migrate_on_start);
    assert!(settings.callback.verification_enabled);
    assert_eq!(settings.ingress.bind, "0.0.0.0:8080");
    assert_eq!(settings.submitter.bind, "0.0.0.0:9102");
    assert_eq!(settings.telemetry.log_filter, "info");
    assert_eq!(settings.telemetry.log_file_max_bytes, 10 * 1024 * 1024);
    assert_eq!(settings.telemetry.log_file_backups, 5);
    assert_eq!(settings.telemetry.otlp_endpoint, None);
}

#[test]
fn each_missing_centralized_setting_is_named_in_one_line() {
    let env = seed_env();
    let line = error_line(
        load(&without(&env, "CENTRALIZED_CALLING_BASE_URL"))
            .unwrap()
            .submitter(),
    );
    assert_eq!(
        line,
        "Missing required centralized calling configuration: CENTRALIZED_CALLING_BASE_URL"
    );

    let line = error_line(
        load(&without(&env, "CENTRALIZED_CALLING_API_KEY"))
            .unwrap()
            .submitter(),
    );
    assert_eq!(
        line,
        "Missing required centralized calling configuration: CENTRALIZED_CALLING_API_KEY \
         (or CENTRALIZED_CALLING_API_KEY_ENCRYPTED with ENCRYPTION_KEY)"
    );

    let neither = without(
        &without(&env, "CENTRALIZED_CALLING_API_KEY"),
        "CENTRALIZED_CALLING_BASE_URL",
    );
    let line = error_line(load(&neither).unwrap().api());
    assert!(
        line.contains("CENTRALIZED_CALLING_BASE_URL, CENTRALIZED_CALLING_API_KEY"),
        "{line}"
    );

    // An empty value is as missing as an absent one (the seed's `all([...])` check).
    let line = error_line(
        load(&with(&env, "CENTRALIZED_CALLING_API_KEY", "  "))
            .unwrap()
            .submitter(),
    );
    assert!(line.ends_with("CENTRALIZED_CALLING_API_KEY (or CENTRALIZED_CALLING_API_KEY_ENCRYPTED with ENCRYPTION_KEY)"), "{line}");
}

#[test]
fn each_binary_requires_only_its_own_settings() {
    // The persister needs neither the API key nor callback secrets.
    let settings = load(&[]).unwrap();
    settings.persister().unwrap();
    // The ingress needs the callback secret, but not the API.
    assert!(error_line(settings.ingress()).contains("CALLBACK_SECRET_KEY"));
    load(&[("CALLBACK_SECRET_KEY", "s")])
        .unwrap()
        .ingress()
        .unwrap();
    // The submitter needs the API, but not the callback secret.
    let submitter_only = without(&seed_env(), "CALLBACK_SECRET_KEY");
    load(&submitter_only).unwrap().submitter().unwrap();
}

#[test]
fn missing_callback_secret_is_named_unless_verification_is_disabled() {
    let env = without(&seed_env(), "CALLBACK_SECRET_KEY");
    let line = error_line(load(&env).unwrap().ingress());
    assert_eq!(
        line,
        "Missing required callback configuration: CALLBACK_SECRET_KEY \
         (or CALLBACK_VERIFICATION_ENABLED=false to accept unsigned callbacks)"
    );
    let disabled = with(&env, "CALLBACK_VERIFICATION_ENABLED", "False");
    let ingress = load(&disabled).unwrap().ingress().unwrap();
    assert!(!ingress.verification_enabled);
    assert!(ingress.secrets.is_empty());
}

#[test]
fn booleans_accept_only_true_or_false() {
    let env = seed_env();
    for (value, expected) in [
        ("true", true),
        ("TRUE", true),
        ("False", false),
        ("false", false),
    ] {
        let settings = load(&with(&env, "CALLBACK_VERIFICATION_ENABLED", value)).unwrap();
        assert_eq!(settings.callback.verification_enabled, expected, "{value}");
    }
    for value in ["1", "yes", "on", "0", "no"] {
        let line = error_line(load(&with(&env, "CALLBACK_VERIFICATION_ENABLED", value)));
        assert_eq!(
            line,
            format!("CALLBACK_VERIFICATION_ENABLED must be true or false, got {value:?}")
        );
    }
    let line = error_line(load(&[("CALLBRIDGE__PERSISTER__MIGRATE_ON_START", "1")]));
    assert!(
        line.starts_with(
            "CALLBRIDGE__PERSISTER__MIGRATE_ON_START must be true or false, got \"1\""
        ),
        "{line}"
    );
    let settings = load(&[("CALLBRIDGE__PERSISTER__MIGRATE_ON_START", "TRUE")]).unwrap();
    assert!(settings.persister().unwrap().migrate_on_start);
}

#[test]
fn database_url_forms_from_the_seed_are_accepted() {
    let forms = [
        "postgres://user:pass@db:5432/client_calling_db",
        "postgresql://user:pass@db:5432/client_calling_db",
        "postgresql+asyncpg://user:pass@db:5432/client_calling_db",
        "postgresql+psycopg://user:pass@db:5432/client_calling_db",
        "postgresql+psycopg2://user:pass@db:5432/client_calling_db",
    ];
    for form in forms {
        for variable in ["CLIENT_CALLING_DB_URL", "CLIENT_CALLING_ASYNC_DB_URL"] {
            let database = load(&[(variable, form)]).unwrap().database().unwrap();
            assert_eq!(
                database.url.expose(),
                "postgres://user:pass@db:5432/client_calling_db",
                "{variable}={form}"
            );
            assert_eq!(
                database.identity.to_string(),
                "user@db:5432/client_calling_db"
            );
        }
    }
}

#[test]
fn both_database_urls_must_name_the_same_database() {
    let agreeing = [
        (
            "CLIENT_CALLING_DB_URL",
            "postgresql+psycopg://user:pass@db/calls",
        ),
        (
            "CLIENT_CALLING_ASYNC_DB_URL",
            "postgresql+asyncpg://user:pass@db:5432/calls",
        ),
    ];
    load(&agreeing).unwrap().database().unwrap();

    for (sync, asynchronous) in [
        (
            "postgresql://user:pass@db/calls",
            "postgresql+asyncpg://user:pass@db/other",
        ),
        (
            "postgresql://user:pass@db/calls",
            "postgresql+asyncpg://user:pass@db2/calls",
        ),
        (
            "postgresql://user:pass@db/calls",
            "postgresql+asyncpg://user:pass@db:5433/calls",
        ),
        (
            "postgresql://user:pass@db/calls",
            "postgresql+asyncpg://admin:pass@db/calls",
        ),
    ] {
        let line = error_line(
            load(&[
                ("CLIENT_CALLING_DB_URL", sync),
                ("CLIENT_CALLING_ASYNC_DB_URL", asynchronous),
            ])
            .unwrap()
            .database(),
        );
        assert!(
            line.starts_with(
                "CLIENT_CALLING_DB_URL and CLIENT_CALLING_ASYNC_DB_URL name different databases"
            ),
            "{line}"
        );
        assert!(!line.contains("pass"), "password leaked: {line}");
    }
}

#[test]
fn malformed_database_url_is_named_without_its_password() {
    let line = error_line(
        load(&[(
            "CLIENT_CALLING_ASYNC_DB_URL",
            "mysql://user:s3cr3t@db/calls",
        )])
        .unwrap()
        .persister(),
    );
    assert!(
        line.starts_with("CLIENT_CALLING_ASYNC_DB_URL must be a PostgreSQL URL"),
        "{line}"
    );
    assert!(!line.contains("s3cr3t"), "{line}");
}

#[test]
fn callback_secrets_are_comma_separated_for_rotation() {
    let settings = load(&[("CALLBACK_SECRET_KEY", " old-secret, new-secret ,,")]).unwrap();
    let ingress = settings.ingress().unwrap();
    let secrets: Vec<&str> = ingress.secrets.iter().map(|s| s.expose()).collect();
    assert_eq!(secrets, ["old-secret", "new-secret"]);

    // Only separators is no secret at all.
    assert!(
        error_line(load(&[("CALLBACK_SECRET_KEY", " , ")]).unwrap().ingress())
            .contains("CALLBACK_SECRET_KEY")
    );
}

#[test]
fn python_fernet_token_from_the_fixture_decrypts() {
    let fixture = fernet_fixture();
    assert_eq!(
        decrypt_api_key(&fixture.key, &fixture.token)
            .unwrap()
            .expose(),
        fixture.plaintext
    );

    let env = with(
        &with(
            &without(&seed_env(), "CENTRALIZED_CALLING_API_KEY"),
            "CENTRALIZED_CALLING_API_KEY_ENCRYPTED",
            Box::leak(fixture.token.clone().into_boxed_str()),
        ),
        "ENCRYPTION_KEY",
        Box::leak(fixture.key.clone().into_boxed_str()),
    );
    let api = load(&env).unwrap().api().unwrap();
    assert_eq!(api.api_key.expose(), fixture.plaintext);
}

#[test]
fn encrypted_api_key_errors_name_the_variable() {
    let fixture = fernet_fixture();
    let base = without(&seed_env(), "CENTRALIZED_CALLING_API_KEY");
    let token: &'static str = Box::leak(fixture.token.into_boxed_str());

    let only_token = with(&base, "CENTRALIZED_CALLING_API_KEY_ENCRYPTED", token);
    assert_eq!(
        error_line(load(&only_token).unwrap().submitter()),
        "Missing required centralized calling configuration: ENCRYPTION_KEY \
         (needed to decrypt CENTRALIZED_CALLING_API_KEY_ENCRYPTED)"
    );

    let wrong_key = with(
        &only_token,
        "ENCRYPTION_KEY",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    let line = error_line(load(&wrong_key).unwrap().submitter());
    assert!(
        line.starts_with("CENTRALIZED_CALLING_API_KEY_ENCRYPTED does not decrypt"),
        "{line}"
    );

    let malformed_key = with(&only_token, "ENCRYPTION_KEY", "not-a-fernet-key");
    let line = error_line(load(&malformed_key).unwrap().submitter());
    assert!(
        line.starts_with("ENCRYPTION_KEY must be a Fernet key"),
        "{line}"
    );

    let both = with(&only_token, "CENTRALIZED_CALLING_API_KEY", "plain");
    let line = error_line(load(&both).unwrap().api_key());
    assert!(line.contains("set only one"), "{line}");
}

#[test]
fn python_decrypts_a_token_made_by_rust() {
    let fixture = fernet_fixture();
    let token = encrypt_api_key(&fixture.key, "made-by-rust-api-key").unwrap();
    let output = Command::new("python3")
        .args([
            "-c",
            "import sys; from cryptography.fernet import Fernet; \
             print(Fernet(sys.argv[1].encode()).decrypt(sys.argv[2].encode()).decode(), end='')",
            &fixture.key,
            &token,
        ])
        .output()
        .expect("python3 (with the `cryptography` package) must be installed to run this test");
    assert!(
        output.status.success(),
        "python could not decrypt: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "made-by-rust-api-key"
    );
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let fixture = fernet_fixture();
    let env = [
        (
            "CENTRALIZED_CALLING_BASE_URL",
            "https://cc.example.com".to_owned(),
        ),
        (
            "CENTRALIZED_CALLING_API_KEY_ENCRYPTED",
            fixture.token.clone(),
        ),
        ("ENCRYPTION_KEY", fixture.key.clone()),
        (
            "CLIENT_CALLING_DB_URL",
            "postgresql://user:dbpassw0rd@db/calls".to_owned(),
        ),
        (
            "RABBITMQ_URL",
            "amqp://user:mqpassw0rd@mq:5672/%2f".to_owned(),
        ),
        (
            "CALLBACK_SECRET_KEY",
            "callbacksecret1,callbacksecret2".to_owned(),
        ),
        ("SIM_API_KEY", "simapikey".to_owned()),
    ];
    let settings = Settings::load_from(env.iter().map(|(k, v)| (*k, v.as_str()))).unwrap();
    let dumps = [
        format!("{settings:?}"),
        format!("{:?}", settings.submitter().unwrap()),
        format!("{:?}", settings.ingress().unwrap()),
        format!("{:?}", settings.persister().unwrap()),
    ];
    for dump in dumps {
        for secret in [
            fixture.plaintext.as_str(),
            fixture.key.as_str(),
            fixture.token.as_str(),
            "dbpassw0rd",
            "mqpassw0rd",
            "callbacksecret",
            "simapikey",
        ] {
            assert!(!dump.contains(secret), "{secret} leaked in {dump}");
        }
        assert!(dump.contains("[REDACTED]"));
    }
}

#[test]
fn layers_apply_defaults_then_file_then_prefixed_env_then_seed_variables() {
    let file = TempConfigFile::new(
        "layers",
        r#"
            [persister]
            batch_size = 7
            prefetch = 9

            [callback]
            secrets = ["from-file-a", "from-file-b"]

            [api]
            base_url = "https://from-file.example.com"

            [telemetry]
            log_format = "pretty"
        "#,
    );
    let env = [
        ("CALLBRIDGE_CONFIG", file.path()),
        // Overrides the file.
        ("CALLBRIDGE__PERSISTER__PREFETCH", "11"),
        (
            "CALLBRIDGE__API__BASE_URL",
            "https://from-prefixed-env.example.com",
        ),
        // The seed's variable overrides both.
        (
            "CENTRALIZED_CALLING_BASE_URL",
            "https://from-seed-variable.example.com",
        ),
    ];
    let settings = load(&env).unwrap();
    assert_eq!(settings.persister.batch_size, 7, "file over default");
    assert_eq!(settings.persister.prefetch, 11, "prefixed env over file");
    assert_eq!(
        settings.api.base_url.as_deref(),
        Some("https://from-seed-variable.example.com"),
        "seed variable over everything"
    );
    assert_eq!(settings.telemetry.log_format, LogFormat::Pretty);
    assert_eq!(settings.persister.batch_linger_ms, 5, "untouched default");
    let secrets: Vec<&str> = settings
        .callback
        .secrets
        .iter()
        .map(|s| s.expose())
        .collect();
    assert_eq!(secrets, ["from-file-a", "from-file-b"]);
}

#[test]
fn rabbitmq_url_may_list_the_nodes_of_a_cluster() {
    let list = "amqp://u:p@mq-0:5672/calls, amqp://u:p@mq-1:5672/calls,amqps://u:p@mq-2:5671/calls";
    let settings = load(&[("RABBITMQ_URL", list), ("CALLBACK_SECRET_KEY", "s")]).unwrap();
    assert_eq!(settings.ingress().unwrap().amqp_url.expose(), list);
    assert_eq!(settings.persister().unwrap().amqp_url.expose(), list);
}

#[test]
fn malformed_values_name_their_variable() {
    let line = error_line(load(&[("CALLBRIDGE__PERSISTER__BATCH_SIZE", "lots")]));
    assert!(
        line.starts_with("CALLBRIDGE__PERSISTER__BATCH_SIZE "),
        "{line}"
    );
    assert!(line.contains("\"lots\""), "{line}");

    let line = error_line(
        load(&[("INGRESS_BIND", "8080"), ("CALLBACK_SECRET_KEY", "s")])
            .unwrap()
            .ingress(),
    );
    assert_eq!(
        line,
        "INGRESS_BIND must be an address such as 0.0.0.0:8080, got \"8080\""
    );

    let line = error_line(
        load(&[("RABBITMQ_URL", "http://guest:hidden@mq")])
            .unwrap()
            .persister(),
    );
    assert!(
        line.starts_with("RABBITMQ_URL must be an amqp:// or amqps:// URL"),
        "{line}"
    );
    assert!(!line.contains("hidden"), "{line}");

    // One bad node in a list of several is as bad as a bad single URL.
    let line = error_line(
        load(&[(
            "RABBITMQ_URL",
            "amqp://guest:hidden@mq-0/%2f,http://guest:hidden@mq-1/%2f",
        )])
        .unwrap()
        .persister(),
    );
    assert!(
        line.starts_with("RABBITMQ_URL must be an amqp:// or amqps:// URL"),
        "{line}"
    );
    assert!(!line.contains("hidden"), "{line}");

    let line = error_line(
        load(&[("CALLBRIDGE__PERSISTER__BATCH_SIZE", "0")])
            .unwrap()
            .persister(),
    );
    assert_eq!(
        line,
        "CALLBRIDGE__PERSISTER__BATCH_SIZE must be at least 1, got 0"
    );

    // Batches in flight beyond the pool would starve the outbox relay.
    let line = error_line(
        load(&[
            ("CALLBRIDGE__PERSISTER__CONCURRENCY", "8"),
            ("CALLBRIDGE__DATABASE__MAX_CONNECTIONS", "8"),
        ])
        .unwrap()
        .persister(),
    );
    assert_eq!(
        line,
        "CALLBRIDGE__PERSISTER__CONCURRENCY must be below CALLBRIDGE__DATABASE__MAX_CONNECTIONS (8), \
         got 8: each batch in flight holds a database connection, and the outbox relay needs one more"
    );

    // A zero body timeout would refuse every callback with a 408.
    let line = error_line(
        load(&[
            ("CALLBRIDGE__INGRESS__BODY_TIMEOUT_MS", "0"),
            ("CALLBACK_SECRET_KEY", "s"),
        ])
        .unwrap()
        .ingress(),
    );
    assert_eq!(
        line,
        "CALLBRIDGE__INGRESS__BODY_TIMEOUT_MS must be at least 1, got 0"
    );

    let line = error_line(load(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]));
    assert!(
        line.starts_with("OTEL_EXPORTER_OTLP_PROTOCOL must be grpc or http/protobuf"),
        "{line}"
    );

    let env = with(
        &seed_env(),
        "CENTRALIZED_CALLING_BASE_URL",
        "centralized-calling.example.com",
    );
    let line = error_line(load(&env).unwrap().submitter());
    assert!(
        line.starts_with("CENTRALIZED_CALLING_BASE_URL must be an http:// or https:// URL"),
        "{line}"
    );
}

#[test]
fn unknown_prefixed_variable_is_refused_and_named() {
    // A typo must not be silently ignored.
    let line = error_line(load(&[("CALLBRIDGE__PERSISTER__BATCHSIZE", "10")]));
    assert!(
        line.starts_with("CALLBRIDGE__PERSISTER__BATCHSIZE is not a known setting (expected one of `bind`, `prefetch`, `batch_size`"),
        "{line}"
    );
    let line = error_line(load(&[("CALLBRIDGE__PERSISTOR__BATCH_SIZE", "10")]));
    assert!(
        line.starts_with("CALLBRIDGE__PERSISTOR__BATCH_SIZE is not a known setting"),
        "{line}"
    );

    let file = TempConfigFile::new("unknown", "[persister]\nbatchsize = 10\n");
    let line = error_line(load(&[("CALLBRIDGE_CONFIG", file.path())]));
    assert_eq!(
        line,
        format!(
            "persister.batchsize (in {}) is not a known setting (expected one of `bind`, `prefetch`, \
             `batch_size`, `batch_linger_ms`, `migrate_on_start`, `concurrency`)",
            file.path()
        )
    );
}

#[test]
fn malformed_or_missing_config_file_is_named() {
    let line = error_line(load(&[(
        "CALLBRIDGE_CONFIG",
        "/nonexistent/callbridge.toml",
    )]));
    assert!(
        line.starts_with("CALLBRIDGE_CONFIG names \"/nonexistent/callbridge.toml\""),
        "{line}"
    );

    let file = TempConfigFile::new("malformed", "[persister\nbatch_size = ");
    let line = error_line(load(&[("CALLBRIDGE_CONFIG", file.path())]));
    assert!(
        line.starts_with("CALLBRIDGE_CONFIG names a file that does not parse"),
        "{line}"
    );

    let file = TempConfigFile::new("badtype", "[persister]\nbatch_size = \"many\"\n");
    let line = error_line(load(&[("CALLBRIDGE_CONFIG", file.path())]));
    assert_eq!(
        line,
        format!(
            "persister.batch_size (in {}) must be an integer, got string \"many\"",
            file.path()
        )
    );

    // A strict boolean in the file is named as the file's entry, not as a variable.
    let file = TempConfigFile::new("badbool", "[persister]\nmigrate_on_start = 1\n");
    let line = error_line(load(&[("CALLBRIDGE_CONFIG", file.path())]));
    assert_eq!(
        line,
        format!(
            "persister.migrate_on_start (in {}) must be true or false, got 1",
            file.path()
        )
    );
}

#[test]
fn example_config_file_documents_exactly_the_defaults() {
    let example =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/callbridge.example.toml");
    let example = example.to_str().unwrap();
    let from_example = load(&[("CALLBRIDGE_CONFIG", example)]).unwrap();
    assert_eq!(from_example, Settings::default());
    assert_eq!(from_example, load(&[]).unwrap());
}

#[test]
fn batch_status_reading_defaults_to_the_simulators_layout_and_a_404_as_unknown() {
    use callbridge_types::centralized_api::{NotFoundMeaning, NumberMatch};

    let reading = load(&seed_env()).unwrap().batch_status_reading().unwrap();
    assert_eq!(reading.numbers_path.as_str(), "/phone_numbers");
    assert_eq!(reading.number_match, NumberMatch::Digits);
    assert_eq!(reading.not_found, NotFoundMeaning::Unknown);

    let env = with(
        &with(
            &seed_env(),
            "CALLBRIDGE__SUBMITTER__BATCH_STATUS_NUMBERS_PATH",
            "/data/calls/*/phone_number",
        ),
        "CALLBRIDGE__SUBMITTER__BATCH_STATUS_NOT_FOUND",
        "none",
    );
    let reading = load(&env).unwrap().batch_status_reading().unwrap();
    assert_eq!(reading.numbers_path.as_str(), "/data/calls/*/phone_number");
    assert_eq!(reading.not_found, NotFoundMeaning::None);

    for (name, bad) in [
        (
            "CALLBRIDGE__SUBMITTER__BATCH_STATUS_NUMBERS_PATH",
            "data.calls",
        ),
        ("CALLBRIDGE__SUBMITTER__BATCH_STATUS_NUMBER_MATCH", "exact"),
        ("CALLBRIDGE__SUBMITTER__BATCH_STATUS_NOT_FOUND", "empty"),
    ] {
        let line = error_line(
            load(&with(&seed_env(), name, bad))
                .unwrap()
                .batch_status_reading(),
        );
        assert!(line.contains(name), "{line}");
    }
}
