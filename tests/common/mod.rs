//! What the end-to-end tests of `tributary sync` share: the process as a
//! user runs it, with its secrets in the environment.

#![allow(dead_code)]

pub mod fixture;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The MariaDB password and S3 secret the pipelines take from the
/// environment (`SYNC_TEST_PASSWORD`, `SYNC_TEST_S3_SECRET`); tests check
/// that neither appears in what the process writes.
pub const PASSWORD: &str = "pw-Sync-9f3a1c";
pub const S3_SECRET: &str = "s3-Secret-77d0e2";

/// A running `tributary sync`, killed when dropped.
pub struct SyncProcess {
    child: Child,
    log: PathBuf,
}

impl SyncProcess {
    pub fn start(config: &Path, log: &Path) -> SyncProcess {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tributary"))
            .args(["sync", "--config"])
            .arg(config)
            .env("SYNC_TEST_PASSWORD", PASSWORD)
            .env("SYNC_TEST_S3_SECRET", S3_SECRET)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        SyncProcess {
            child,
            log: log.to_path_buf(),
        }
    }

    /// The process's peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status");
        kb * 1024
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test if the process exited (with its log).
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("tributary sync exited ({status}):\n{}", self.log());
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit status once the process exits by itself (within `within`);
    /// other tasks of the test run meanwhile.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {within:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then the exit status within 30 s.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "no exit 30 s after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SyncProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `tributary <args>` to completion as a user would (the pipeline's
/// secrets in the environment): exit status and stdout + stderr.
pub fn tributary(args: &[&str]) -> (std::process::ExitStatus, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(args)
        .env("SYNC_TEST_PASSWORD", PASSWORD)
        .env("SYNC_TEST_S3_SECRET", S3_SECRET)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}
