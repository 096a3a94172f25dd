//! Client connections: a target given as `HOST:PORT` or a URL, and a few
//! HTTP/2 channels that the load tasks share round-robin, as a real client
//! pool would (one channel would serialise every call on one connection).

use tonic::transport::{Channel, Endpoint};

use super::error::BenchError;

/// Most channels opened, whatever the concurrency.
pub const MAX_CHANNELS: usize = 4;

/// `HOST:PORT` becomes `http://HOST:PORT`; a URL is kept as is.
pub fn target_url(target: &str) -> String {
    if target.contains("://") {
        target.to_string()
    } else {
        format!("http://{target}")
    }
}

/// Largest response accepted: far above any context, so a big one is
/// measured rather than refused by the client's 4 MiB default.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Opens `count` channels to `target`, each its own TCP connection.
pub async fn connect(target: &str, count: usize) -> Result<Vec<Channel>, BenchError> {
    let url = target_url(target);
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| BenchError::Target {
            target: target.to_string(),
            reason: e.to_string(),
        })?
        .tcp_nodelay(true)
        .connect_timeout(std::time::Duration::from_secs(5));
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| BenchError::Connect {
                target: url.clone(),
                source,
            })?;
        channels.push(channel);
    }
    Ok(channels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_gets_a_scheme() {
        assert_eq!(target_url("127.0.0.1:50051"), "http://127.0.0.1:50051");
        assert_eq!(target_url("http://h:1"), "http://h:1");
    }
}
