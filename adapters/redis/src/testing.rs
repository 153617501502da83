//! A real Redis for tests (ours, and yours: multi-node tests of an application on tether).
//!
//! [`RedisServer::for_tests`] uses `TETHER_REDIS_URL` when it is set (CI starts one Redis for
//! the whole run), else starts its own `redis-server` from PATH on a free 127.0.0.1 port,
//! without persistence, and stops it on drop. Without either it panics with what to install:
//! Redis is a requirement of these tests, not an option.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Redis to test against; stops it on drop if it was started here.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl RedisServer {
    /// `TETHER_REDIS_URL`, or a fresh `redis-server` (see the module docs).
    ///
    /// # Panics
    /// When neither is available (with what to install), or the started server does not
    /// accept connections within 10 s.
    pub fn for_tests() -> Self {
        Self::start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`RedisServer::for_tests`], with the failure as a message instead of a panic.
    pub fn start() -> Result<Self, String> {
        if let Ok(url) = std::env::var("TETHER_REDIS_URL") {
            return Ok(Self { child: None, url });
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start redis-server ({e}): install it (apt-get install redis-server) \
                     or set TETHER_REDIS_URL=redis://127.0.0.1:PORT"
                )
            })?;
        let redis = Self {
            child: Some(child),
            url: format!("redis://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        // Nothing to await: the child signals readiness only by accepting connections.
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() >= deadline {
                return Err("redis-server did not start within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(redis)
    }
}
