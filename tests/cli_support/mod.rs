//! Helpers of the CLI integration tests: run the built `tether` binary (or an example), read its
//! output line by line as it comes, and kill every process on drop (also when a test fails).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "cli-test-token";

/// A running `tether` process (or example); killed when dropped.
pub struct Tether {
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    /// Lines read so far.
    pub out: Vec<String>,
    pub err: Vec<String>,
}

/// Starts `tether ARGS` with piped output.
pub fn tether(args: &[&str]) -> Tether {
    run(Path::new(env!("CARGO_BIN_EXE_tether")), args)
}

/// Starts `program ARGS` with piped output.
pub fn run(program: &Path, args: &[&str]) -> Tether {
    let mut child = Command::new(program)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    let stdout = lines(child.stdout.take().expect("stdout"));
    let stderr = lines(child.stderr.take().expect("stderr"));
    Tether {
        child,
        stdout,
        stderr,
        out: Vec::new(),
        err: Vec::new(),
    }
}

fn lines(pipe: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

impl Tether {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads stdout until a line satisfies `pred`; returns it. Panics after `limit`.
    pub fn wait_stdout(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    self.out.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.drain_stderr();
                    panic!(
                        "no matching stdout line within {limit:?}; stdout tail {:?}; stderr {:?}",
                        self.out.iter().rev().take(5).collect::<Vec<_>>(),
                        self.err
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.drain_stderr();
                    panic!(
                        "stdout closed before a matching line; stderr {:?}",
                        self.err
                    )
                }
            }
        }
    }

    /// Waits until stdout has at least `n` lines in total.
    pub fn wait_stdout_lines(&mut self, n: usize, limit: Duration) {
        while self.out.len() < n {
            self.wait_stdout(limit, |_| true);
        }
    }

    /// Waits for the exit (panics after `limit`) and collects the rest of both outputs: the
    /// pipes reach end-of-file when the process exits.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let closed = drain_to_eof(&self.stdout, &mut self.out, deadline)
            && drain_to_eof(&self.stderr, &mut self.err, deadline);
        assert!(
            closed,
            "the process did not exit within {limit:?}; stdout tail {:?}; stderr {:?}",
            self.out.iter().rev().take(5).collect::<Vec<_>>(),
            self.err
        );
        self.child.wait().expect("wait")
    }

    pub fn drain_stderr(&mut self) {
        while let Ok(line) = self.stderr.try_recv() {
            self.err.push(line);
        }
    }

    /// Sends a signal by name (`TERM`, `KILL`, `INT`).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }
}

/// Moves lines into `sink` until the pipe's end (true) or the deadline (false).
fn drain_to_eof(rx: &Receiver<String>, sink: &mut Vec<String>, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => sink.push(line),
            Err(RecvTimeoutError::Disconnected) => return true,
            Err(RecvTimeoutError::Timeout) => return false,
        }
    }
}

impl Drop for Tether {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tether serve` on 127.0.0.1 (port 0 unless `listen` says otherwise) and waits for
/// its listening line; returns the process and the WebSocket URL.
pub fn serve(extra: &[&str], listen: &str) -> (Tether, String) {
    let mut args = vec!["serve", "--listen", listen, "--token", TOKEN];
    args.extend_from_slice(extra);
    let mut server = tether(&args);
    let line = server.wait_stdout(Duration::from_secs(20), |l| l.starts_with("listening on "));
    let url = line["listening on ".len()..].to_owned();
    (server, url)
}

/// The port of a `ws://127.0.0.1:PORT/ws` URL.
pub fn port_of(url: &str) -> u16 {
    url.trim_start_matches("ws://127.0.0.1:")
        .trim_end_matches("/ws")
        .parse()
        .expect("port")
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("tether-cli-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    pub fn file(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `seq` of each `--json` line.
pub fn seqs(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["seq"].as_u64().expect("seq")
        })
        .collect()
}

/// Asserts the failure contract: the exit code, exactly one line on stderr, no panic text.
pub fn assert_one_line_failure(args: &[&str], code: i32) -> String {
    let mut p = tether(args);
    let status = p.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(code), "{args:?}: stderr {:?}", p.err);
    assert_eq!(
        p.err.len(),
        1,
        "{args:?}: one line expected, got {:?}",
        p.err
    );
    let line = p.err[0].clone();
    assert!(line.starts_with("tether: "), "{line}");
    assert!(
        !line.contains("panicked") && !line.contains("backtrace"),
        "{line}"
    );
    line
}
