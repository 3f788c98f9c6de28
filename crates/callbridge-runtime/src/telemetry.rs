//! Logs and traces, initialised once per binary: structured logs on stdout
//! (JSON or human-readable), an optional size-rotated log file, OTLP trace export only
//! when an endpoint is configured, and W3C trace context carried in AMQP headers so one
//! trace runs from the ingress request to the persister's database write.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use lapin::types::{AMQPValue, FieldTable, LongString};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{self, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, OtlpProtocol, TelemetrySettings};

pub use opentelemetry::Context;

/// Keeps telemetry running; dropping it flushes buffered log lines and exports the
/// spans not yet sent. Hold it in `main` until the service has stopped.
#[must_use = "dropping the guard stops log file writing and trace export"]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    exports_traces: bool,
    _log_file_writer: Option<WorkerGuard>,
}

impl TelemetryGuard {
    /// Whether spans are exported (an OTLP endpoint was configured).
    pub fn exports_traces(&self) -> bool {
        self.exports_traces
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("could not flush traces at exit: {error}");
        }
    }
}

/// The spans that become OpenTelemetry spans, whatever RUST_LOG says of the logs.
const TRACE_FILTER: &str = "info";

/// Target of the spans opened for every message (a callback request, its publish, a
/// consumed delivery): they become OpenTelemetry spans but are not copied into log lines.
///
/// A log layer formats every span it sees into a JSON string when the span opens, and
/// parses and rewrites that string on each `record`, whether or not a line is ever
/// logged inside it: measured on the ingress, that was about 12 % of its CPU per
/// callback, for the few lines logged under such a span. Those lines name what they
/// need themselves.
pub const PER_MESSAGE_SPANS: &str = "callbridge::per_message";

/// The filter of the log layers: `RUST_LOG` (`directives`), without the spans of
/// [`PER_MESSAGE_SPANS`].
pub fn log_filter<S>(
    directives: &str,
) -> anyhow::Result<impl tracing_subscriber::layer::Filter<S> + use<S>>
where
    S: tracing::Subscriber + for<'lookup> tracing_subscriber::registry::LookupSpan<'lookup>,
{
    let env_filter = EnvFilter::try_new(directives)
        .with_context(|| format!("RUST_LOG is not a valid filter: {directives:?}"))?;
    let not_per_message = filter::filter_fn(|metadata| {
        !(metadata.is_span() && metadata.target() == PER_MESSAGE_SPANS)
    });
    Ok(env_filter.and(not_per_message))
}

/// Installs the global tracing subscriber and the W3C propagator. `service_name` is the
/// binary's name, used unless `OTEL_SERVICE_NAME` overrides it. Call once, inside the
/// tokio runtime (the gRPC exporter needs it).
pub fn init_telemetry(
    service_name: &str,
    settings: &TelemetrySettings,
) -> anyhow::Result<TelemetryGuard> {
    let filter = log_filter(&settings.log_filter)?;
    let json = match settings.log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !io::stdout().is_terminal(),
    };
    let stdout_json = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
    });
    let stdout_pretty = (!json).then(tracing_subscriber::fmt::layer);

    let (file_layer, log_file_writer) = match &settings.log_file {
        Some(path) => {
            let file = SizeRotatingFile::open(
                path,
                settings.log_file_max_bytes,
                settings.log_file_backups,
            )?;
            // Writes happen on a background thread so a slow disk never stalls a request.
            let (writer, guard) = tracing_appender::non_blocking(file);
            let layer = tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_ansi(false)
                .with_writer(writer);
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };

    let service_name = settings.service_name.as_deref().unwrap_or(service_name);
    // The OpenTelemetry layer is always installed, so every span has W3C ids and
    // `traceparent` crosses the broker in every message even where nothing collects traces;
    // spans leave the process only when an OTLP endpoint is configured.
    let tracer_provider = tracer_provider(
        service_name,
        settings
            .otlp_endpoint
            .as_deref()
            .map(|endpoint| (endpoint, settings.otlp_protocol)),
    )?;
    let otel_layer =
        tracing_opentelemetry::layer().with_tracer(tracer_provider.tracer(service_name.to_owned()));

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(tracer_provider.clone());
    // RUST_LOG filters the logs only: an operator who quietens the logs to `warn` must
    // not switch off the spans that carry trace context from service to service.
    let log_layers = Layer::and_then(Layer::and_then(stdout_json, stdout_pretty), file_layer)
        .with_filter(filter);
    let otel_layer = otel_layer.with_filter(EnvFilter::new(TRACE_FILTER));
    tracing_subscriber::registry()
        .with(log_layers)
        .with(otel_layer)
        .try_init()
        .context("while installing the tracing subscriber (was telemetry initialised twice?)")?;

    tracing::info!(
        service = service_name,
        otlp_endpoint = settings.otlp_endpoint.as_deref(),
        log_file = settings
            .log_file
            .as_deref()
            .map(Path::display)
            .map(tracing::field::display),
        "telemetry initialised"
    );
    Ok(TelemetryGuard {
        tracer_provider: Some(tracer_provider),
        exports_traces: settings.otlp_endpoint.is_some(),
        _log_file_writer: log_file_writer,
    })
}

fn tracer_provider(
    service_name: &str,
    otlp: Option<(&str, OtlpProtocol)>,
) -> anyhow::Result<SdkTracerProvider> {
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let Some((endpoint, protocol)) = otlp else {
        return Ok(builder.build());
    };
    let exporter = match protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build(),
        // OTEL_EXPORTER_OTLP_ENDPOINT is a base URL; the spec appends the signal's path.
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .build(),
    }
    .with_context(|| format!("while building the OTLP exporter for {endpoint}"))?;
    Ok(builder.with_batch_exporter(exporter).build())
}

/// Writes the W3C `traceparent`/`tracestate` of `context` into AMQP message headers.
pub fn inject_context(context: &Context, headers: &mut FieldTable) {
    TraceContextPropagator::new().inject_context(context, &mut HeaderInjector(headers));
}

/// Writes the current `tracing` span's trace context into AMQP message headers.
pub fn inject_current_span(headers: &mut FieldTable) {
    inject_context(&tracing::Span::current().context(), headers);
}

/// Reads the W3C trace context from AMQP message headers (an empty context when absent
/// or malformed), to parent the consumer's span: `span.set_parent(extract_context(h))`.
pub fn extract_context(headers: &FieldTable) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

struct HeaderInjector<'a>(&'a mut FieldTable);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0
            .insert(key.into(), AMQPValue::LongString(LongString::from(value)));
    }
}

struct HeaderExtractor<'a>(&'a FieldTable);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(key)? {
            AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes()).ok(),
            AMQPValue::ShortString(value) => Some(value.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(|key| key.as_str()).collect()
    }
}

/// A log file rotated by size like Python's `RotatingFileHandler` (the seed's 10 MB × 5):
/// when a write would take `path` past `max_bytes`, `path.N` becomes `path.N+1` (the
/// oldest beyond `backups` is deleted), `path` becomes `path.1`, and a new `path` starts.
#[derive(Debug)]
pub struct SizeRotatingFile {
    path: PathBuf,
    file: File,
    written: u64,
    max_bytes: u64,
    backups: usize,
}

impl SizeRotatingFile {
    pub fn open(path: &Path, max_bytes: u64, backups: usize) -> anyhow::Result<SizeRotatingFile> {
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).with_context(|| {
                format!("while creating the log directory {}", parent.display())
            })?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("while opening the log file {}", path.display()))?;
        let written = file
            .metadata()
            .with_context(|| format!("while reading the size of {}", path.display()))?
            .len();
        Ok(SizeRotatingFile {
            path: path.to_owned(),
            file,
            written,
            max_bytes,
            backups,
        })
    }

    fn backup_path(&self, index: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{index}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.backups > 0 {
            for index in (1..self.backups).rev() {
                let from = self.backup_path(index);
                if from.exists() {
                    std::fs::rename(&from, self.backup_path(index + 1))?;
                }
            }
            std::fs::rename(&self.path, self.backup_path(1))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

impl Write for SizeRotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A line that alone exceeds the limit still goes into a file of its own.
        if self.written > 0 && self.written + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let written = self.file.write(buf)?;
        self.written += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}
