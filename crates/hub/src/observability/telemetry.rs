//! Process-wide tracing setup: the log format (text or JSON lines on
//! stderr, `RUST_LOG` filter, default `info`) and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//! set, OTLP/HTTP protobuf export of the spans (the standard `OTEL_*`
//! variables are honoured: service name, resource attributes, headers,
//! timeout). Without the variable no exporter exists: spans cost what plain
//! `tracing` costs.
//!
//! JSON lines carry, beside tracing-subscriber's fields (`timestamp`,
//! `level`, `fields`, `target`, `span`), the `request_id` of the HTTP request
//! the line belongs to (whichever span of the request is current) and, while
//! spans are exported, the OpenTelemetry `trace_id` and `span_id` (hex) of the
//! current span, so log lines and traces join.

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing::span::{Attributes, Id};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line, with the current span's fields.
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    #[error("a tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Keeps the exporter alive; dropping it flushes the spans still queued.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans ended so far (tests, and before exit).
    pub fn flush(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Whether the OTel environment asks for trace export.
pub fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
        && std::env::var("OTEL_TRACES_EXPORTER").map_or(true, |v| v != "none")
}

/// Installs the global subscriber. Call it outside any tokio runtime (the
/// OTLP client is a blocking one, running on the exporter's own thread).
pub fn init(format: LogFormat) -> Result<Telemetry, TelemetryError> {
    init_with_writer(format, BoxMakeWriter::new(std::io::stderr))
}

/// [`init`] with the log lines going to `writer` (tests read them back).
pub fn init_with_writer(
    format: LogFormat,
    writer: BoxMakeWriter,
) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(writer).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(JsonWithTrace(
                tracing_subscriber::fmt::format()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            ))
            .with_writer(writer)
            .and_then(RequestIds)
            .boxed(),
    };
    let provider = if otlp_configured() {
        Some(otlp_provider()?)
    } else {
        None
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("mlx-hub"))
            .boxed()
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(Telemetry { provider })
}

fn otlp_provider() -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    // endpoint, headers and timeout come from the OTEL_EXPORTER_OTLP_* variables
    crate::install_tls_provider();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("mlx-hub");
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// Keeps each span's `request_id` field (as [`RequestId`]) for the JSON lines.
struct RequestIds;

/// The `request_id` a span was created with.
struct RequestId(String);

impl<S> Layer<S> for RequestIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        struct Find(Option<String>);
        impl tracing::field::Visit for Find {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "request_id" {
                    self.0 = Some(value.to_owned());
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "request_id" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        let mut find = Find(None);
        attrs.record(&mut find);
        if let (Some(rid), Some(span)) = (find.0, ctx.span(id)) {
            span.extensions_mut().insert(RequestId(rid));
        }
    }
}

/// tracing-subscriber's JSON line plus `request_id`, `trace_id`, `span_id`.
struct JsonWithTrace(Format<Json>);

impl<S, N> FormatEvent<S, N> for JsonWithTrace
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let mut extra = String::new();
        let request_id = ctx.event_scope().and_then(|scope| {
            scope
                .into_iter()
                .find_map(|span| span.extensions().get::<RequestId>().map(|r| r.0.clone()))
        });
        if let Some(rid) = request_id {
            let quoted = serde_json::to_string(&rid).map_err(|_| std::fmt::Error)?;
            extra.push_str(&format!(",\"request_id\":{quoted}"));
        }
        // the context tracing-opentelemetry attaches while an exported span is entered
        let cx = opentelemetry::Context::current();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            extra.push_str(&format!(
                ",\"trace_id\":\"{}\",\"span_id\":\"{}\"",
                sc.trace_id(),
                sc.span_id()
            ));
        }
        let trimmed = line.trim_end();
        match trimmed.strip_suffix('}') {
            Some(head) if !extra.is_empty() => writeln!(writer, "{head}{extra}}}"),
            _ => writer.write_str(&line),
        }
    }
}
