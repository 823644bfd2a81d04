//! Real `redis-server` processes for tests, on free loopback ports, each with its
//! own directory; killed when dropped. Never the machine's own Redis.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

/// A port nobody listens on right now (the OS's pick; a race with another process
/// taking it is retried by the caller).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn redis_server() -> PathBuf {
    for p in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    "redis-server".into()
}

/// Every write kept in the append-only file, fsynced each time.
const DURABLE: [&str; 6] = [
    "--save",
    "",
    "--appendonly",
    "yes",
    "--appendfsync",
    "always",
];

impl RedisServer {
    /// A plain server: nothing on disk.
    pub fn start() -> Self {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// A server that keeps every write in its append-only file (fsync each write),
    /// as production would run it for otpd.
    pub fn start_durable() -> Self {
        Self::start_with(&DURABLE)
    }

    /// [`RedisServer::start_durable`], replicating the server on `master_port`.
    pub fn start_durable_replica_of(master_port: u16) -> Self {
        let port = master_port.to_string();
        let mut args = DURABLE.to_vec();
        args.extend(["--replicaof", "127.0.0.1", &port]);
        Self::start_with(&args)
    }

    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for _ in 0..20 {
            let port = free_port();
            if let Some(child) = spawn(dir.path(), port, &extra) {
                return Self {
                    port,
                    child,
                    dir,
                    extra,
                };
            }
        }
        panic!("could not start redis-server (is it installed? scripts/test.sh installs it)");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kill it hard (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start it again on the same port and directory (with what its files kept).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = spawn(self.dir.path(), self.port, &self.extra) {
                self.child = child;
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not restart");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Run a command with redis-cli against this server; its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Start redis-server and wait until it answers; `None` if it exited (port taken).
fn spawn(dir: &Path, port: u16, extra: &[String]) -> Option<Child> {
    let mut child = Command::new(redis_server())
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--dir", dir.to_str().expect("a UTF-8 path")])
        .args(["--daemonize", "no", "--protected-mode", "no"])
        .args(["--logfile", "redis.log"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts (scripts/test.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() && cli(port, &["PING"]).contains("PONG")
        {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of `masters` masters (no replicas) on loopback, built with
/// `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(masters: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| {
                RedisServer::start_with(&[
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !nodes
            .iter()
            .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            assert!(
                Instant::now() < deadline,
                "the cluster did not become ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { nodes }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}
