//! Real Redis processes for tests (ours, and yours: multi-node tests of an application on
//! tether).
//!
//! [`RedisServer::for_tests`] uses `TETHER_REDIS_URL` when it is set (CI starts one Redis for
//! the whole run), else starts its own `redis-server` from PATH on a free 127.0.0.1 port,
//! without persistence, and stops it on drop. Tests that kill, restart or flush Redis must
//! never touch a shared one: [`RedisServer::own`] always starts a private instance (optionally
//! with AOF, so that [`RedisServer::restart`] brings its data back), and [`RedisCluster`]
//! starts a private Redis Cluster of three masters. Without `redis-server` (and `redis-cli`
//! for the cluster) they fail with what to install: Redis is a requirement of these tests,
//! not an option.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started server may take to answer `PING`.
const START_LIMIT: Duration = Duration::from_secs(10);

/// One `redis-server` process this module started, restartable with the same arguments.
#[derive(Debug)]
struct Process {
    child: Option<Child>,
    args: Vec<String>,
    port: u16,
}

impl Process {
    fn start(port: u16, args: Vec<String>) -> Result<Self, String> {
        let mut p = Self {
            child: None,
            args,
            port,
        };
        p.spawn()?;
        Ok(p)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start redis-server ({e}): install it (apt-get install redis-server) \
                     or set TETHER_REDIS_URL=redis://127.0.0.1:PORT"
                )
            })?;
        self.child = Some(child);
        wait_for_pong(self.port)
    }

    /// SIGKILL, and waits for the process to be gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Answers once the server on `port` replies `+PONG` (not while it loads its data).
fn wait_for_pong(port: u16) -> Result<(), String> {
    let deadline = Instant::now() + START_LIMIT;
    // Nothing to await: a server signals readiness only by answering.
    loop {
        if ping(port) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "redis-server on port {port} did not answer within 10 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 5];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut reply).is_ok() && &reply == b"+PONG"
}

/// A free 127.0.0.1 port (with `port + 10000` free too when `bus` is set: a cluster node's
/// bus port).
fn free_port(bus: bool) -> Result<u16, String> {
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
        let port = l.local_addr().map_err(|e| e.to_string())?.port();
        if !bus
            || port
                .checked_add(10_000)
                .is_some_and(|b| TcpListener::bind(("127.0.0.1", b)).is_ok())
        {
            return Ok(port);
        }
    }
    Err("no free port pair for a cluster node".into())
}

/// A directory for a server's files, removed on drop.
#[derive(Debug)]
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Result<Self, String> {
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
        let dir = std::env::temp_dir().join(format!("tether-{name}-{}", u64::from_le_bytes(nonce)));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Redis to test against; stops it on drop if it was started here.
#[derive(Debug)]
pub struct RedisServer {
    process: Option<Process>,
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
    // Declared after the process: removed once it is gone.
    _dir: Option<Scratch>,
}

/// How [`RedisServer::own`] runs its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Persistence {
    /// Nothing on disk: a restart comes back empty.
    #[default]
    None,
    /// Append-only file, fsynced on every write: a restart, even after SIGKILL, comes back
    /// with every acknowledged write.
    Aof,
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
            return Ok(Self {
                process: None,
                url,
                _dir: None,
            });
        }
        Self::start_own(Persistence::None, &[])
    }

    /// A private `redis-server` (never the shared one), for tests that kill, restart or flush
    /// it; `extra` are more `redis-server` arguments (e.g. `["--maxmemory", "2mb"]`).
    ///
    /// # Panics
    /// When `redis-server` cannot be started (with what to install).
    pub fn own(persistence: Persistence, extra: &[&str]) -> Self {
        Self::start_own(persistence, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    fn start_own(persistence: Persistence, extra: &[&str]) -> Result<Self, String> {
        let port = free_port(false)?;
        let dir = Scratch::new("redis")?;
        let mut args: Vec<String> = ["--port", &port.to_string(), "--bind", "127.0.0.1"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.extend(["--dir".to_owned(), dir.0.display().to_string()]);
        args.extend(["--save", ""].map(str::to_owned));
        match persistence {
            Persistence::None => args.extend(["--appendonly", "no"].map(str::to_owned)),
            Persistence::Aof => {
                args.extend(["--appendonly", "yes", "--appendfsync", "always"].map(str::to_owned))
            }
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Ok(Self {
            process: Some(Process::start(port, args)?),
            url: format!("redis://127.0.0.1:{port}"),
            _dir: Some(dir),
        })
    }

    fn process(&mut self) -> &mut Process {
        self.process
            .as_mut()
            .expect("only a server started here (RedisServer::own) can be killed or restarted")
    }

    /// Kills the server (SIGKILL): every connection drops at once.
    ///
    /// # Panics
    /// On the shared `TETHER_REDIS_URL` server.
    pub fn kill(&mut self) {
        self.process().kill();
    }

    /// Starts the server again, same port and files (killing it first if it runs); returns
    /// once it answers `PING` (its data loaded).
    ///
    /// # Panics
    /// On the shared server, or if it does not come back within 10 s.
    pub fn restart(&mut self) {
        let p = self.process();
        p.kill();
        p.spawn().unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A private Redis Cluster: three masters on free 127.0.0.1 ports (no replicas), with AOF
/// fsynced on every write, created with `redis-cli --cluster create`. Everything stops, and
/// its files go, on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Process>,
    _dir: Scratch,
}

impl RedisCluster {
    /// Starts the cluster and waits until it serves every slot.
    ///
    /// # Panics
    /// When `redis-server` or `redis-cli` is missing (with what to install), or the cluster
    /// does not form within 10 s.
    pub fn start() -> Self {
        Self::try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`RedisCluster::start`], with the failure as a message instead of a panic.
    pub fn try_start() -> Result<Self, String> {
        let dir = Scratch::new("cluster")?;
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_port(true)?;
            let node_dir = dir.0.join(port.to_string());
            std::fs::create_dir_all(&node_dir).map_err(|e| e.to_string())?;
            let args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--dir",
                &node_dir.display().to_string(),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            nodes.push(Process::start(port, args)?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| {
                format!("cannot run redis-cli ({e}): install it (apt-get install redis-tools)")
            })?;
        if !created.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&created.stderr)
            ));
        }
        let cluster = Self { nodes, _dir: dir };
        cluster.wait_until_ok()?;
        Ok(cluster)
    }

    /// Waits until every node reports `cluster_state:ok`.
    fn wait_until_ok(&self) -> Result<(), String> {
        let deadline = Instant::now() + START_LIMIT;
        for n in &self.nodes {
            // Nothing to await: the state is only visible by asking.
            while !cluster_ok(n.port) {
                if Instant::now() >= deadline {
                    return Err(format!("cluster node {} not ok within 10 s", n.port));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// `redis://127.0.0.1:PORT` of every master.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// Kills master `index` (SIGKILL) and starts it again with its files (AOF and cluster
    /// config); returns once the cluster serves every slot again.
    ///
    /// # Panics
    /// If the node or the cluster does not come back within 10 s.
    pub fn restart(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        node.kill();
        node.spawn().unwrap_or_else(|e| panic!("{e}"));
        self.wait_until_ok().unwrap_or_else(|e| panic!("{e}"));
    }
}

fn cluster_ok(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"CLUSTER INFO\r\n").is_err() {
        return false;
    }
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    // The reply is one bulk string; its first lines carry the state.
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        if buf[..got].windows(13).any(|w| w == b"cluster_state") && buf[..got].ends_with(b"\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&buf[..got]).contains("cluster_state:ok")
}
