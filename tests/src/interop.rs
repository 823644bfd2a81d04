//! Independent SMPP peers from the npm `smpp` package (`tests/interop/*.js`): the
//! test command installs it (`npm ci` in tests/interop); without it a test fails,
//! it does not skip.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A Node.js SMSC, killed when dropped.
pub struct NodeSmsc {
    child: Child,
    pub port: u16,
}

impl Drop for NodeSmsc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NodeSmsc {
    /// Run `script` (in tests/interop) with `args`; it prints `listening PORT` once it
    /// listens on loopback.
    pub fn start(script: &str, args: &[&str]) -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop");
        assert!(
            dir.join("node_modules/smpp").exists(),
            "the npm smpp package is missing: run `npm ci` in {} (scripts/test.sh does)",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg(script)
            .args(args)
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node is installed (scripts/test.sh installs it when absent)");
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("a first line");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from {script}: {line:?}"));
        Self { child, port }
    }
}
