//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the server exports its spans
//! over OTLP/gRPC, and flushes them on SIGTERM. The collector is a minimal
//! in-process OTLP trace service on loopback that records what it gets.

mod support;

use std::{
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_server::{TraceService, TraceServiceServer},
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use support::redis_server::free_port;
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
struct Collector {
    /// (service.name, span name) of every span received.
    spans: Arc<Mutex<Vec<(String, String)>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().expect("lock");
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push((service.clone(), span.name));
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test]
async fn spans_reach_an_otlp_collector() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let otlp = listener.local_addr().expect("addr");
    let service = collector.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(service))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });

    let port = free_port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_journey"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
        .env_remove("JOURNEY_STORE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn journey serve");

    // A call that fails (NOT_FOUND) is still traced.
    let target = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = loop {
        if let Ok(c) =
            journey::pb::journey_service_client::JourneyServiceClient::connect(target.clone()).await
        {
            break c;
        }
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut client = client;
    let status = client
        .get_journey_context(journey::pb::GetJourneyContextRequest {
            customer_id: "nobody".into(),
            max_events: 0,
            ..Default::default()
        })
        .await
        .expect_err("unknown customer");
    assert_eq!(status.code(), tonic::Code::NotFound);

    // SIGTERM flushes the batch of spans before the process exits.
    let pid = server.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let exit = tokio::task::spawn_blocking(move || server.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(exit.success(), "{exit:?}");

    let spans = collector.spans.lock().expect("lock").clone();
    assert!(
        spans
            .iter()
            .any(|(service, name)| service.contains("journey") && name == "get_journey_context"),
        "spans received: {spans:?}"
    );
}
