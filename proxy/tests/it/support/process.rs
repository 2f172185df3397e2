//! The real `sigsci-proxy` binary as a child process: started with flags and environment
//! variables the test chooses, its log read on a thread, killed if the test fails.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sigsci-proxy");

/// A running proxy process, ready (or exited: see [`ProxyProcess::spawn`]).
pub struct ProxyProcess {
    pub child: Child,
    /// Fields of the `Listening` log line (`rpc.addr`, `admin.addr`, `control.path`).
    pub fields: HashMap<String, String>,
    log: Option<JoinHandle<String>>,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a process that did not start left: its exit status and log.
pub struct Failed {
    pub status: ExitStatus,
    pub log: String,
}

impl ProxyProcess {
    /// Starts the binary with `args` and `env` (the test's own `SIGSCI_PROXY_*` are removed) and
    /// waits for its `Listening` line and `/readyz` = 200 (panics if not ready within
    /// [`super::PATIENCE`]); `Err` if it exits first.
    pub async fn spawn(args: &[&str], env: &[(&str, &str)]) -> Result<Self, Failed> {
        let mut cmd = Command::new(BIN);
        for (k, _) in std::env::vars() {
            if k.starts_with("SIGSCI_PROXY_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("Listening") {
                    let fields: HashMap<String, String> = line
                        .split_whitespace()
                        .filter_map(|w| w.split_once('='))
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect();
                    let _ = tx.send(fields);
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let fields =
            tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)).ok())
                .await
                .unwrap();
        let mut running = ProxyProcess {
            child,
            fields: HashMap::new(),
            log: Some(log),
        };
        let Some(fields) = fields else {
            let status = tokio::task::block_in_place(|| running.child.wait().unwrap());
            let log = running.log.take().unwrap().join().unwrap();
            return Err(Failed { status, log });
        };
        running.fields = fields;
        let admin = running.admin();
        super::wait_until("/readyz answers 200", async || {
            super::http(admin, "GET", "/readyz").await.0 == 200
        })
        .await;
        Ok(running)
    }

    /// The binary on `:0` loopback ports in front of the agent at `agent`, with `extra` flags;
    /// panics with its log if it exits instead.
    pub async fn in_front_of(agent: SocketAddr, extra: &[&str]) -> Self {
        let agents = agent.to_string();
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--agents",
            &agents,
        ];
        args.extend_from_slice(extra);
        match Self::spawn(&args, &[]).await {
            Ok(p) => p,
            Err(f) => panic!("the proxy exited with {}: {}", f.status, f.log),
        }
    }

    /// The bound admin address.
    pub fn admin(&self) -> SocketAddr {
        self.fields["admin.addr"].parse().unwrap()
    }

    /// The first RPC address, when TCP.
    pub fn rpc(&self) -> SocketAddr {
        self.fields["rpc.addr"].parse().unwrap()
    }

    /// CPU time (user + system) the process has used so far, from /proc.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let hz = 100; // USER_HZ on Linux
        Duration::from_millis(ticks * 1000 / hz)
    }

    /// Waits for the exit (at most `limit`); returns its status and the whole log.
    pub async fn wait(mut self, limit: Duration) -> (ExitStatus, String) {
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(start.elapsed() < limit, "still running after {limit:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let log = self.log.take().unwrap().join().unwrap();
        (status, log)
    }
}

/// A loopback port free right now (bound and released), for tests that must name the port in
/// the environment before the process starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
