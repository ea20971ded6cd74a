//! Logs and traces. JSON logs on stderr; every span is also an OpenTelemetry span, exported over
//! OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. The W3C `traceparent` travels in HTTP and
//! Kafka headers, so one trace covers a record's ingest, its projection and the read that waits
//! for it. Log lines carry ids, counts and error kinds only; never names, birth dates, MRNs or
//! clinical content.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The W3C Trace Context header, in HTTP and in Kafka record headers.
pub const TRACEPARENT: &str = "traceparent";

/// Keeps the tracer provider alive; dropping it flushes spans not yet exported.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Install logging and tracing for `service`. Call once, at the start of `main`.
pub fn init(service: &'static str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,tokio_postgres=warn"));
    let mut builder = SdkTracerProvider::builder().with_resource(
        opentelemetry_sdk::Resource::builder()
            .with_service_name(service)
            .build(),
    );
    let otlp = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let mut export_error = None;
    if otlp.is_some() {
        // Endpoint, headers and timeouts come from the standard OTEL_EXPORTER_OTLP_* variables.
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => export_error = Some(e.to_string()),
        }
    }
    let provider = builder.build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));
    let logs = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(false)
        // Every enclosing span's fields, so a line shows the trace id its root span recorded.
        .with_span_list(true)
        .with_writer(std::io::stderr);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(logs)
        .try_init();
    match (&otlp, export_error) {
        (_, Some(error)) => tracing::error!(%error, "OTLP exporter not started; traces stay local"),
        (Some(endpoint), None) => tracing::info!(%endpoint, "exporting traces over OTLP/HTTP"),
        (None, None) => {}
    }
    Telemetry { provider }
}

/// Make `span` a child of the remote span in `traceparent` (a new trace when it is absent or
/// malformed) and record its trace id in the span's `trace_id` field, which the span must declare
/// (`trace_id = tracing::field::Empty`).
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(value) = traceparent {
        let cx = TraceContextPropagator::new().extract(&OneHeader(value));
        if cx.span().span_context().is_valid() {
            let _ = span.set_parent(cx);
        }
    }
    let cx = span.context();
    let context = cx.span().span_context().clone();
    if context.is_valid() {
        span.record("trace_id", context.trace_id().to_string());
    }
}

/// The `traceparent` of `span`, to hand on to the next hop; `None` without a tracer installed.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = OneHeader::default();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.into_value()
}

/// The trace id inside a `traceparent` value, if it is well formed.
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    let cx = TraceContextPropagator::new().extract(&OneHeader(traceparent));
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| context.trace_id().to_string())
}

/// A carrier holding only `traceparent` (tracestate is not propagated).
#[derive(Default)]
struct OneHeader<T = String>(T);

impl OneHeader {
    fn into_value(self) -> Option<String> {
        (!self.0.is_empty()).then_some(self.0)
    }
}

impl<T: AsRef<str>> Extractor for OneHeader<T> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then(|| self.0.as_ref())
    }
    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

impl Injector for OneHeader {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_only_from_well_formed_traceparents() {
        assert_eq!(
            trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id_of("garbage"), None);
        assert_eq!(trace_id_of(""), None);
    }

    fn with_tracer(f: impl FnOnce()) {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f);
    }

    #[test]
    fn a_span_continues_the_callers_trace_and_hands_it_on() {
        with_tracer(|| {
            let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let span = tracing::info_span!("http", trace_id = tracing::field::Empty);
            continue_trace(&span, Some(parent));
            let next = traceparent(&span).expect("a traceparent to hand on");
            assert!(next.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
            assert!(
                !next.contains("00f067aa0ba902b7"),
                "a new span id, not the caller's"
            );
        });
    }

    #[test]
    fn without_a_usable_parent_a_new_trace_starts() {
        with_tracer(|| {
            let mut ids = std::collections::HashSet::new();
            for parent in [None, Some("garbage"), Some("")] {
                let span = tracing::info_span!("http", trace_id = tracing::field::Empty);
                continue_trace(&span, parent);
                let next = traceparent(&span).expect("a new trace");
                ids.insert(trace_id_of(&next).expect("well formed"));
            }
            assert_eq!(ids.len(), 3);
        });
    }

    #[test]
    fn without_a_tracer_nothing_is_handed_on() {
        let span = tracing::info_span!("http", trace_id = tracing::field::Empty);
        continue_trace(&span, None);
        assert_eq!(traceparent(&span), None);
    }
}
