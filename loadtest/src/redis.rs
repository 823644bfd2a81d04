//! Redis beside a run on the Redis store: a `redis-server` the tool starts on a free
//! loopback port, the commands it ran (from `INFO commandstats`, which counts the
//! commands scripts run as well as what clients send: otpd counts its own round
//! trips), and `redis-benchmark` on the same server for scale.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("cannot start redis-server (is it installed?): {0}")]
    Spawn(std::io::Error),
    #[error("redis-server did not answer on {0} within 10 s")]
    NotReady(SocketAddr),
    #[error("talking to Redis at {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("Redis at {0} answered {1:?}")]
    Answer(SocketAddr, String),
}

/// A `redis-server` of the tool's, without persistence; killed when dropped.
pub struct RedisServer {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> Result<Self, RedisError> {
        let dir = tempfile::tempdir().map_err(RedisError::Spawn)?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(RedisError::Spawn)?;
        let child = Command::new("redis-server")
            .args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(RedisError::Spawn)?;
        let server = Self {
            addr,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while command(addr, "PING").map(|r| r != "PONG").unwrap_or(true) {
            if Instant::now() > deadline {
                return Err(RedisError::NotReady(addr));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One inline command, its answer as text (simple string, error or bulk string).
pub fn command(addr: SocketAddr, line: &str) -> Result<String, RedisError> {
    let io = |e| RedisError::Io(addr, e);
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    stream
        .write_all(format!("{line}\r\n").as_bytes())
        .map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first).map_err(io)?;
    let first = first.trim_end();
    match first.as_bytes().first() {
        Some(b'+') => Ok(first[1..].to_string()),
        Some(b'$') => {
            let len: usize = first[1..]
                .parse()
                .map_err(|_| RedisError::Answer(addr, first.to_string()))?;
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body).map_err(io)?;
            body.truncate(len);
            Ok(String::from_utf8_lossy(&body).into_owned())
        }
        _ => Err(RedisError::Answer(addr, first.to_string())),
    }
}

/// The address of a `redis://host:port` URL without credentials.
pub fn url_addr(url: &str) -> Option<SocketAddr> {
    let rest = url.strip_prefix("redis://")?;
    let authority = rest.split('/').next()?;
    if authority.contains('@') {
        return None;
    }
    authority.replace("localhost", "127.0.0.1").parse().ok()
}

/// Calls per command, from `INFO commandstats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CommandStats(pub BTreeMap<String, u64>);

impl CommandStats {
    pub fn read(addr: SocketAddr) -> Result<Self, RedisError> {
        Ok(Self::parse(&command(addr, "INFO commandstats")?))
    }

    pub fn parse(info: &str) -> Self {
        let mut calls = BTreeMap::new();
        for line in info.lines() {
            let Some((name, stats)) = line
                .strip_prefix("cmdstat_")
                .and_then(|rest| rest.split_once(':'))
            else {
                continue;
            };
            let n = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            calls.insert(name.to_string(), n);
        }
        Self(calls)
    }

    fn delta(&self, before: &Self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0) - before.0.get(name).copied().unwrap_or(0)
    }

    /// Every command since `before`, scripts' included (not `INFO` itself).
    pub fn commands_since(&self, before: &Self) -> u64 {
        self.0
            .keys()
            .filter(|k| k.as_str() != "info")
            .map(|k| self.delta(before, k))
            .sum()
    }

    /// Every command since `before` by name, scripts' included.
    pub fn by_command_since(&self, before: &Self) -> BTreeMap<String, u64> {
        self.0
            .keys()
            .filter(|k| k.as_str() != "info")
            .map(|k| (k.clone(), self.delta(before, k)))
            .filter(|(_, d)| *d > 0)
            .collect()
    }
}

/// otpd's count of its Redis round trips, from the text of its `/metrics`.
pub fn round_trips_in(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("otpd_redis_round_trips_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// `redis-benchmark -t set` with `requests` requests from `clients` clients against
/// `addr`: its requests per second, or `None` when it is not installed or says
/// nothing readable.
pub fn benchmark(addr: SocketAddr, requests: u64, clients: usize) -> Option<f64> {
    let out = Command::new("redis-benchmark")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["-c", &clients.to_string(), "-n", &requests.to_string()])
        .args(["-t", "set", "-q"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    let line = text.lines().rfind(|l| l.contains("requests per second"))?;
    line.split_whitespace()
        .find_map(|w| w.parse::<f64>().ok().filter(|v| *v > 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commandstats_split_round_trips_from_script_commands() {
        let before = CommandStats::parse("# Commandstats\r\ncmdstat_evalsha:calls=10,usec=5\r\n");
        let after = CommandStats::parse(
            "# Commandstats\r\ncmdstat_evalsha:calls=40,usec=9\r\ncmdstat_hset:calls=90,usec=1\r\ncmdstat_info:calls=3,usec=1\r\ncmdstat_xreadgroup:calls=2,usec=1\r\n",
        );
        assert_eq!(after.commands_since(&before), 122);
        assert_eq!(after.by_command_since(&before)["evalsha"], 30);
        assert_eq!(after.by_command_since(&before)["hset"], 90);
        assert_eq!(
            url_addr("redis://127.0.0.1:6390"),
            Some("127.0.0.1:6390".parse().unwrap())
        );
        assert_eq!(url_addr("redis://u:p@127.0.0.1:6390"), None);
    }
}
