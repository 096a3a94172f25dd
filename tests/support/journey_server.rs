//! The journey server in-process on `127.0.0.1:0`, with a generated client
//! and a shutdown handle. No sleep: the listener is bound before `run`.

use std::{net::SocketAddr, time::Duration};

use journey::{
    config::{ServeConfig, StoreUrl},
    pb::journey_service_client::JourneyServiceClient,
    server,
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

pub struct JourneyServer {
    pub addr: SocketAddr,
    /// The metrics endpoint's address, when it has one.
    pub metrics_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), server::ServeError>>>,
}

impl JourneyServer {
    pub async fn start(config: ServeConfig) -> Self {
        Self::start_on(config, None).await
    }

    /// The server with its metrics endpoint on another free port.
    pub async fn start_with_metrics(config: ServeConfig) -> Self {
        let metrics = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::start_on(config, Some(metrics)).await
    }

    async fn start_on(config: ServeConfig, metrics: Option<TcpListener>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics_addr = metrics.as_ref().map(|m| m.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run_with_metrics(
            config,
            listener,
            metrics,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            metrics_addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `GET path` on the metrics endpoint: the status line and the body.
    /// Fails the test after 10 s rather than hang it.
    pub async fn metrics_get(&self, path: &str) -> (String, String) {
        tokio::time::timeout(Duration::from_secs(10), self.metrics_get_now(path))
            .await
            .expect("the metrics endpoint answers within 10 s")
    }

    async fn metrics_get_now(&self, path: &str) -> (String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.metrics_addr.expect("started with metrics");
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the metrics endpoint");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send the request");
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .await
            .expect("read the answer");
        let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
        let status = head.lines().next().unwrap_or_default().to_string();
        (status, body.to_string())
    }

    pub async fn memory() -> Self {
        Self::start(ServeConfig::default()).await
    }

    pub async fn redis(url: &str) -> Self {
        Self::start(ServeConfig {
            store: StoreUrl::Redis(url.to_string()),
            ..ServeConfig::default()
        })
        .await
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.endpoint())
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect to journey")
    }

    pub async fn client(&self) -> JourneyServiceClient<Channel> {
        JourneyServiceClient::new(self.channel().await)
    }

    /// Stops the server and waits for it to finish, returning its result.
    pub async fn stop(mut self) -> Result<(), server::ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("server task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for JourneyServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A running server and the redis-server it may use: a test on the Redis
/// store keeps both alive as long as it holds this.
pub struct Api {
    pub server: JourneyServer,
    pub redis: Option<crate::support::redis_server::RedisServer>,
}

impl Api {
    /// The server on the memory store, with `config` otherwise.
    pub async fn memory_with(config: ServeConfig) -> Self {
        Self {
            server: JourneyServer::start(patient(config)).await,
            redis: None,
        }
    }

    /// The server on a fresh redis-server, with `config` otherwise. Returns
    /// once the server reports SERVING, i.e. its Redis connection is up, so
    /// a test's first call does not also pay for connecting on a busy
    /// machine. Redis calls get 5 s rather than the default 1 s for the
    /// same reason.
    pub async fn redis_with(config: ServeConfig) -> Self {
        let redis = crate::support::redis_server::RedisServer::start();
        let server = JourneyServer::start(patient(ServeConfig {
            store: StoreUrl::Redis(redis.url()),
            redis_timeout_ms: 5_000,
            ..config
        }))
        .await;
        let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
        assert!(
            crate::support::wait_for_health(&mut health, "", true).await,
            "the server never reached its redis-server"
        );
        Self {
            server,
            redis: Some(redis),
        }
    }
}

/// Tests check outcomes, not speed: on a loaded machine a multi-step call
/// (a merge takes a dozen Redis round trips) must not hit the 5 s default
/// RPC limit and turn an outcome into DEADLINE_EXCEEDED.
fn patient(config: ServeConfig) -> ServeConfig {
    ServeConfig {
        request_timeout_ms: 60_000,
        ..config
    }
}

pub async fn memory_api() -> Api {
    Api::memory_with(ServeConfig::default()).await
}

pub async fn redis_api() -> Api {
    Api::redis_with(ServeConfig::default()).await
}
