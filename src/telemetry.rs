//! Logs and traces through `tracing`: human-readable logs by default, JSON
//! with `--log-format json`; `RUST_LOG` sets the level (default `info`).
//! Spans go to an OpenTelemetry collector over OTLP/gRPC only when the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` variable is set (the other
//! `OTEL_*` variables apply as usual).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{trace::SdkTracerProvider, Resource};
use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};

use crate::config::LogFormat;

/// What must be flushed before the process exits.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered; called on shutdown.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(err) = provider.shutdown() {
                eprintln!("journey: flushing traces failed: {err}");
            }
        }
    }
}

/// Installs the global subscriber (a second call leaves the first in place).
pub fn init(format: LogFormat) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let text = (format == LogFormat::Text)
        .then(|| fmt::layer().with_writer(std::io::stderr).with_ansi(ansi));
    let json =
        (format == LogFormat::Json).then(|| fmt::layer().json().with_writer(std::io::stderr));

    let (provider, otel_error) = match std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT") {
        None => (None, None),
        Some(_) => match otlp_provider() {
            Ok(provider) => (Some(provider), None),
            Err(err) => (None, Some(err)),
        },
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("journey")));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(otel)
        .try_init();
    if let Some(err) = otel_error {
        tracing::warn!(error = %err, "OpenTelemetry export is off: the OTLP exporter could not be built");
    } else if provider.is_some() {
        tracing::info!("exporting traces over OTLP");
    }
    Telemetry { provider }
}

fn otlp_provider() -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("journey").build())
        .build())
}
