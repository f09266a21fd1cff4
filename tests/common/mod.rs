//! Helpers for end-to-end tests of the real `troupe` binary: start a node on a free port with its own
//! data dir, find its address in the JSON log, talk HTTP to it, and stop it with a real signal.
#![allow(dead_code, reason = "each test binary uses a different subset of these helpers")]

pub mod cluster;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub fn troupe_bin() -> &'static str {
    env!("CARGO_BIN_EXE_troupe")
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        // The counter keeps two tests of one binary apart even when the clock gives both the same
        // reading (two nodes on one data dir: the second cannot lock the store and exits).
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("troupe-test-{tag}-{}-{n}-{}", std::process::id(), fastrand_u64()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fastrand_u64() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(17)
}

/// A running node.
pub struct Node {
    pub child: Child,
    pub addr: SocketAddr,
    pub data: TempDir,
    pub logs: mpsc::Receiver<String>,
    pub startup: Duration,
}

/// A command for the binary with a clean `TROUPE_*` environment.
pub fn command() -> Command {
    wrapped_command(&[])
}

/// Like [`command`], run through `wrapper` (e.g. `ip netns exec NS`), which execs the binary.
pub fn wrapped_command(wrapper: &[&str]) -> Command {
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(troupe_bin());
            cmd
        }
        None => Command::new(troupe_bin()),
    };
    for (k, _) in std::env::vars() {
        if k.starts_with("TROUPE_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

impl Node {
    /// Start `troupe run` on 127.0.0.1:0 with JSON logs and the given extra env, and wait until it
    /// logs that it is ready.
    pub fn start(envs: &[(&str, &str)]) -> Node {
        Self::start_with(TempDir::new("node"), "127.0.0.1:0", &[], envs)
    }

    /// Like [`Node::start`], on an existing data dir (a restart after [`Node::take_data`]).
    pub fn start_in(data: TempDir, envs: &[(&str, &str)]) -> Node {
        Self::start_with(data, "127.0.0.1:0", &[], envs)
    }

    /// Start `troupe run` over the data dir `data`, listening for HTTP on `http_addr`, with extra
    /// command-line arguments and env (e.g. `--cluster-addr`), and wait until it logs that it is ready.
    pub fn start_with(data: TempDir, http_addr: &str, args: &[&str], envs: &[(&str, &str)]) -> Node {
        Self::start_wrapped(&[], data, http_addr, args, envs)
    }

    /// Like [`Node::start_with`], with the binary run through `wrapper` (see [`wrapped_command`]).
    pub fn start_wrapped(
        wrapper: &[&str],
        data: TempDir,
        http_addr: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Node {
        let t0 = Instant::now();
        let mut cmd = wrapped_command(wrapper);
        cmd.args(["run", "--http-addr", http_addr, "--log-format", "json", "--data-dir"])
            .arg(data.path())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn troupe");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen: Vec<String> = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|e| {
                let _ = child.kill();
                let status = child.wait();
                let tail = seen.iter().rev().take(10).rev().cloned().collect::<Vec<_>>().join("\n");
                match e {
                    mpsc::RecvTimeoutError::Timeout => {
                        panic!("node did not log readiness within 30 s; last log:\n{tail}")
                    }
                    mpsc::RecvTimeoutError::Disconnected => {
                        panic!("node exited before it was ready ({status:?}); log:\n{tail}")
                    }
                }
            });
            seen.push(line.clone());
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if v["message"] == "troupe node ready" {
                let addr = v["addr"].as_str().expect("addr field").parse().expect("socket addr");
                return Node { child, addr, data, logs: rx, startup: t0.elapsed() };
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Send a signal with the system's `kill` command (keeps the tests free of unsafe FFI).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status();
        assert!(status.expect("run kill").success(), "kill -{sig} failed");
    }

    /// Wait for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("node did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Takes the data dir out (it is no longer removed when this node drops), for a restart.
    pub fn take_data(&mut self) -> TempDir {
        std::mem::replace(&mut self.data, TempDir(PathBuf::new()))
    }

    /// Log lines seen so far (after readiness).
    pub fn drain_logs(&self) -> Vec<String> {
        self.logs.try_iter().collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking HTTP client with a short timeout.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client")
}

/// Poll `f` until it returns Some or `limit` passes.
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Registers `email` (start the node with it in `TROUPE_AUTH_ADMIN_EMAILS` for an admin) and returns an
/// access token.
pub async fn token_for(c: &reqwest::Client, node: &Node, email: &str) -> String {
    let body = serde_json::json!({"email": email, "password": "correct horse battery staple", "display_name": "ops"});
    let r = c.post(node.url("/api/v1/auth/register")).json(&body).send().await.expect("register");
    assert_eq!(r.status(), 201, "register {email}");
    let body = serde_json::json!({"email": email, "password": "correct horse battery staple"});
    let r = c.post(node.url("/api/v1/auth/login")).json(&body).send().await.expect("login");
    let v: serde_json::Value = r.json().await.expect("login body");
    v["access_token"].as_str().expect("access_token").to_owned()
}
