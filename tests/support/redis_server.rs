//! A throwaway `redis-server` on a free loopback port (and a Unix socket in
//! its temp dir), snapshots and AOF off; killed and reaped on drop. Never the Redis
//! that may already run on this machine, never a mock.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
    /// `requirepass`, when the server asks for one.
    password: Option<String>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with_password(None)
    }

    /// A server that refuses clients without this password (`requirepass`).
    pub fn start_with_password(password: Option<&str>) -> Self {
        // The port is free when asked but could be taken before
        // redis-server binds it: retry with another port in that case.
        for _ in 0..5 {
            if let Some(server) = Self::try_start_on(free_port(), password) {
                return server;
            }
        }
        panic!("could not start redis-server on a free port after 5 tries");
    }

    /// Starts a server on a given port (to bring a killed one back).
    pub fn start_on(port: u16) -> Self {
        for _ in 0..50 {
            if let Some(server) = Self::try_start_on(port, None) {
                return server;
            }
        }
        panic!("could not start redis-server on port {port}");
    }

    fn try_start_on(port: u16, password: Option<&str>) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("redis.log");
        let mut command = Command::new("redis-server");
        if let Some(password) = password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(dir.path().join("redis.sock"))
            .args(["--unixsocketperm", "700"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (see README)");
        let mut server = Self {
            child,
            port,
            dir,
            password: password.map(str::to_string),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = server.child.try_wait() {
                return None; // exited: most likely the port was taken
            }
            if server.ping() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        panic!("redis-server on port {port} did not answer PING within 10s; log:\n{log}");
    }

    pub fn url(&self) -> String {
        self.url_with_db(0)
    }

    /// The URL of one of the server's databases, with its password if any.
    pub fn url_with_db(&self, db: u32) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/{db}", self.port),
            None => format!("redis://127.0.0.1:{}/{db}", self.port),
        }
    }

    /// The URL of one of the server's databases over its Unix socket, with
    /// its password if any.
    pub fn unix_url_with_db(&self, db: u32) -> String {
        let socket = self.dir.path().join("redis.sock");
        let mut url = format!("redis+unix://{}?db={db}", socket.display());
        if let Some(password) = &self.password {
            url.push_str(&format!("&pass={password}"));
        }
        url
    }

    fn ping(&self) -> bool {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut conn| redis::cmd("PING").query::<String>(&mut conn))
            .is_ok()
    }

    /// A synchronous connection for inspecting what the service wrote.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect to test redis")
    }

    /// Stops the server now (for tests of an unreachable store).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill(); // a failing test must still clean up
        let _ = self.child.wait(); // reap, so no zombie outlives the test
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
