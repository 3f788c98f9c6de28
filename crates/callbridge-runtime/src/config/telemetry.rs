//! Logs and traces, set up the same way by every binary.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// `RUST_LOG` syntax.
    pub log_filter: String,
    /// Also log to this file, rotated by size (the seed's `RotatingFileHandler`).
    pub log_file: Option<PathBuf>,
    pub log_file_max_bytes: u64,
    /// Rotated files kept besides the live one.
    pub log_file_backups: usize,
    /// `OTEL_SERVICE_NAME`; each binary's own name when unset.
    pub service_name: Option<String>,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; traces are exported only when set.
    pub otlp_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub otlp_protocol: OtlpProtocol,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            log_format: LogFormat::Auto,
            log_filter: "info".to_owned(),
            log_file: None,
            log_file_max_bytes: 10 * 1024 * 1024,
            log_file_backups: 5,
            service_name: None,
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::HttpProtobuf,
        }
    }
}

/// Log line format on stdout (and in the log file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum LogFormat {
    /// JSON unless stdout is a terminal: structured in production, readable locally.
    Auto,
    Json,
    Pretty,
}

impl TryFrom<String> for LogFormat {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(LogFormat::Auto),
            "json" => Ok(LogFormat::Json),
            "pretty" | "text" => Ok(LogFormat::Pretty),
            _ => Err(format!("must be auto, json or pretty, got {value:?}")),
        }
    }
}

/// The OTLP transports the SDK is built with (the OpenTelemetry spec's default is
/// `http/protobuf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

impl TryFrom<String> for OtlpProtocol {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "grpc" => Ok(OtlpProtocol::Grpc),
            "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
            _ => Err(format!("must be grpc or http/protobuf, got {value:?}")),
        }
    }
}
