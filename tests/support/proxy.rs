//! A TCP proxy on loopback that counts round trips: each time the client
//! starts sending after the server has answered (or for the first time)
//! counts one. A pipeline of many commands written at once is one round
//! trip; a command that waits for an earlier reply is another. It can also
//! cut its connections after a number of round trips, and send new
//! connections to another server while the old ones stay (a failover).

use std::sync::{
    atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering},
    Arc,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

pub struct CountingProxy {
    pub port: u16,
    round_trips: Arc<AtomicU64>,
    faults: Arc<Faults>,
    /// Where new connections go.
    upstream: Arc<AtomicU16>,
}

/// A switch that cuts the proxy after a number of round trips, to test
/// what a connection lost halfway through an operation leaves behind.
#[derive(Default)]
struct Faults {
    /// Round trips still allowed before the cut; negative: no cut planned.
    budget: std::sync::atomic::AtomicI64,
    /// While set, connections are closed as soon as they are accepted.
    down: AtomicBool,
    /// Set by `cut_once_after`: the cut closes the connection that carried
    /// the round trip, and new connections are let through.
    once: AtomicBool,
    /// Set by `lose_reply_after`: the cut round trip's request reaches the
    /// server; its reply is lost with the connection.
    deliver: AtomicBool,
}

impl CountingProxy {
    pub async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let round_trips = Arc::new(AtomicU64::new(0));
        let faults = Arc::new(Faults::default());
        faults.budget.store(-1, Ordering::SeqCst);
        let upstream = Arc::new(AtomicU16::new(upstream_port));
        let counter = round_trips.clone();
        let switch = faults.clone();
        let target = upstream.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if switch.down.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close
                }
                let port = target.load(Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(("127.0.0.1", port)).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                tokio::spawn(relay(client, server, counter.clone(), switch.clone()));
            }
        });
        Self {
            port,
            round_trips,
            faults,
            upstream,
        }
    }

    /// Sends the connections made from now on to another server; those
    /// already open stay with the old one.
    pub fn switch_to(&self, upstream_port: u16) {
        self.upstream.store(upstream_port, Ordering::SeqCst);
    }

    /// Lets `n` more round trips through, then cuts every connection and
    /// refuses new ones until `heal`.
    pub fn cut_after(&self, n: i64) {
        self.faults.once.store(false, Ordering::SeqCst);
        self.faults.deliver.store(false, Ordering::SeqCst);
        self.faults.budget.store(n, Ordering::SeqCst);
    }

    /// Lets `n` more round trips through, then closes the connection the
    /// next one comes on, unanswered; connections made after go through.
    pub fn cut_once_after(&self, n: i64) {
        self.faults.once.store(true, Ordering::SeqCst);
        self.faults.deliver.store(false, Ordering::SeqCst);
        self.faults.budget.store(n, Ordering::SeqCst);
    }

    /// As `cut_once_after`, but the request of the round trip cut reaches
    /// the server: it runs, and only its reply is lost.
    pub fn lose_reply_after(&self, n: i64) {
        self.faults.once.store(true, Ordering::SeqCst);
        self.faults.deliver.store(true, Ordering::SeqCst);
        self.faults.budget.store(n, Ordering::SeqCst);
    }

    /// As `lose_reply_after`, then as `cut_after`: the request of the
    /// round trip cut runs, its reply is lost, and every connection after
    /// it is refused until `heal`.
    pub fn lose_reply_then_cut_after(&self, n: i64) {
        self.faults.once.store(false, Ordering::SeqCst);
        self.faults.deliver.store(true, Ordering::SeqCst);
        self.faults.budget.store(n, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.faults.budget.store(-1, Ordering::SeqCst);
        self.faults.once.store(false, Ordering::SeqCst);
        self.faults.deliver.store(false, Ordering::SeqCst);
        self.faults.down.store(false, Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::SeqCst)
    }
}

async fn relay(client: TcpStream, server: TcpStream, counter: Arc<AtomicU64>, faults: Arc<Faults>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // True while the last bytes seen went from the server to the client.
    let answered = Arc::new(AtomicBool::new(true));
    let answered_up = answered.clone();
    // Set when this connection's replies are to be lost (`deliver`).
    let mute = Arc::new(AtomicBool::new(false));
    let mute_up = mute.clone();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if faults.down.load(Ordering::SeqCst) {
                break;
            }
            if answered_up.swap(false, Ordering::SeqCst) {
                counter.fetch_add(1, Ordering::SeqCst);
                if faults.budget.load(Ordering::SeqCst) == 0 {
                    if faults.once.load(Ordering::SeqCst) {
                        faults.budget.store(-1, Ordering::SeqCst);
                    } else {
                        faults.down.store(true, Ordering::SeqCst);
                    }
                    if faults.deliver.load(Ordering::SeqCst) {
                        mute_up.store(true, Ordering::SeqCst);
                        let _ = server_write.write_all(&buf[..n]).await;
                    }
                    break;
                }
                if faults.budget.load(Ordering::SeqCst) > 0 {
                    faults.budget.fetch_sub(1, Ordering::SeqCst);
                }
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            answered.store(true, Ordering::SeqCst);
            if mute.load(Ordering::SeqCst) {
                break;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::join!(up, down);
}
