//! Structured one-line logs on stderr through `tracing`.
//!
//! Level: the runtime's `logLevel`, else `LOG_LEVEL`, else `info`. Installed once per process;
//! later runtimes only adjust nothing (the first wins), which matches one Node process = one logger.

use std::sync::Once;

static INIT: Once = Once::new();

/// Map the reference's level names (pino's: trace/debug/info/warn/error/fatal) to tracing's.
pub fn normalize_level(level: &str) -> Option<&'static str> {
    match level.trim().to_ascii_lowercase().as_str() {
        "trace" => Some("trace"),
        "debug" => Some("debug"),
        "info" => Some("info"),
        "warn" | "warning" => Some("warn"),
        "error" | "fatal" => Some("error"),
        "silent" | "off" => Some("off"),
        _ => None,
    }
}

pub fn init(level: Option<&str>) {
    INIT.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        use tracing_subscriber::Layer as _;
        let env_level = std::env::var("LOG_LEVEL").ok();
        let level = level
            .and_then(normalize_level)
            .or_else(|| env_level.as_deref().and_then(normalize_level))
            .unwrap_or("info");
        let filter = tracing_subscriber::EnvFilter::new(format!("agent_runtime={level},agent_runtime_node={level}"));
        // Events only: spans are for traces, so without an exporter no layer wants them and
        // they cost nothing, and log lines keep their one-line shape.
        let events = tracing_subscriber::filter::filter_fn(|m| m.is_event());
        let logs = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_target(false)
            .compact()
            .with_filter(tracing_subscriber::filter::FilterExt::and(filter, events));
        let traces = traces().map(|tracer| {
            // Spans only (events stay logs), whatever the log level.
            let spans =
                tracing_subscriber::filter::filter_fn(|m| m.is_span() && m.target().starts_with("agent_runtime"));
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_filter(spans)
        });
        let _ = tracing_subscriber::registry().with(logs).with(traces).try_init();
    });
}

static TRACES: std::sync::OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = std::sync::OnceLock::new();

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set: a tracer
/// exporting spans over OTLP/HTTP (JSON) in batches on its own thread. Unset: none, and spans
/// cost what a disabled `tracing` span costs.
fn traces() -> Option<opentelemetry_sdk::trace::SdkTracer> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpJson)
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("agent-runtime: traces are off: {e}");
            return None;
        }
    };
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "agent-runtime".into());
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(service).build())
        .build();
    let tracer = provider.tracer("agent-runtime");
    let _ = TRACES.set(provider);
    Some(tracer)
}

/// Send the spans still waiting in the batch (at shutdown).
pub fn flush_traces() {
    if let Some(p) = TRACES.get() {
        let _ = p.force_flush();
    }
}
