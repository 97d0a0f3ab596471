//! Where the MySQL password comes from. It is read when a connection is made,
//! and read again after an authentication failure, so rotating the password
//! (new env value, file or vault output) needs no restart. It is never logged:
//! `Debug` of every type here prints a redaction.

use std::fmt;
use std::path::PathBuf;
use std::process::Command;

use serde::{Deserialize, Serialize};
use tributary_core::{Error, ErrorKind, Result};

/// A password in memory; `Debug`/`Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The password itself, for the one place that sends it to the server.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How to obtain the password.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordSource {
    /// No password.
    #[default]
    None,
    /// An environment variable's value.
    Env(String),
    /// A file's contents (trailing newline removed), e.g. a mounted secret.
    File(PathBuf),
    /// A command's standard output (trailing newline removed), e.g. a vault CLI.
    Command(Vec<String>),
    /// The password written in the config. Allowed, but warned about.
    Literal(String),
}

impl fmt::Debug for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordSource::None => f.write_str("None"),
            PasswordSource::Env(v) => write!(f, "Env({v:?})"),
            PasswordSource::File(p) => write!(f, "File({p:?})"),
            PasswordSource::Command(c) => write!(f, "Command({:?})", c.first()),
            PasswordSource::Literal(_) => f.write_str("Literal(***)"),
        }
    }
}

fn trim_newline(mut s: String) -> String {
    while s.ends_with('\n') || s.ends_with('\r') {
        s.pop();
    }
    s
}

impl PasswordSource {
    pub fn validate(&self) -> Result<()> {
        match self {
            PasswordSource::Env(v) if v.is_empty() => Err(Error::invalid_config(
                "mysql.password.env names no variable",
            )),
            PasswordSource::Command(c) if c.is_empty() => Err(Error::invalid_config(
                "mysql.password.command is empty: give the program and its arguments",
            )),
            PasswordSource::Literal(_) => {
                tracing::warn!(
                    "mysql.password is written in the config; prefer password.env, password.file or password.command"
                );
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Reads the password now. Errors name the source, never the value.
    pub fn resolve(&self) -> Result<Option<Secret>> {
        let unreadable = |what: String| Error::new(ErrorKind::Authentication, what);
        Ok(match self {
            PasswordSource::None => None,
            PasswordSource::Literal(p) => Some(Secret::new(p.clone())),
            PasswordSource::Env(var) => Some(Secret::new(std::env::var(var).map_err(|_| {
                unreadable(format!(
                    "environment variable {var} (mysql.password.env) is not set"
                ))
            })?)),
            PasswordSource::File(path) => Some(Secret::new(trim_newline(
                std::fs::read_to_string(path).map_err(|e| {
                    unreadable(format!(
                        "cannot read password file {} (mysql.password.file): {e}",
                        path.display()
                    ))
                })?,
            ))),
            PasswordSource::Command(argv) => {
                let out = run_with_deadline(argv, COMMAND_DEADLINE).map_err(|e| {
                    unreadable(format!(
                        "cannot run password command {:?} (mysql.password.command): {e}",
                        argv[0]
                    ))
                })?;
                if !out.status.success() {
                    // Its stderr may echo the secret: report only the status.
                    return Err(unreadable(format!(
                        "password command {:?} failed with {}",
                        argv[0], out.status
                    )));
                }
                let text = String::from_utf8(out.stdout).map_err(|_| {
                    unreadable(format!("password command {:?} printed non-UTF-8", argv[0]))
                })?;
                Some(Secret::new(trim_newline(text)))
            }
        })
    }
}

/// How long a password command may run (a vault CLI waiting on a dead
/// network must not stall the job for ever).
const COMMAND_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `argv`, killing it past `deadline`. Its stdout is read on a thread
/// while the exit is polled (a password fits any pipe, but a chatty command
/// must not block on a full one).
fn run_with_deadline(
    argv: &[String],
    deadline: std::time::Duration,
) -> std::io::Result<std::process::Output> {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).map(|_| buf)
    });
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "it did not finish within {} s and was killed",
                    deadline.as_secs()
                ),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let stdout = reader.join().expect("reader thread")?;
    Ok(std::process::Output {
        status,
        stdout,
        stderr: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_resolve_and_never_print_the_secret() {
        let dir = std::env::temp_dir().join(format!("tributary-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "s3cr3t-file\n").unwrap();
        let sources = [
            (PasswordSource::File(file.clone()), "s3cr3t-file"),
            (
                PasswordSource::Command(vec!["printf".into(), "s3cr3t-cmd\\n".into()]),
                "s3cr3t-cmd",
            ),
            (PasswordSource::Literal("s3cr3t-lit".into()), "s3cr3t-lit"),
        ];
        for (src, want) in sources {
            let secret = src.resolve().unwrap().unwrap();
            assert_eq!(secret.expose(), want);
            for shown in [
                format!("{src:?}"),
                format!("{secret:?}"),
                format!("{secret}"),
            ] {
                assert!(!shown.contains("s3cr3t"), "{shown}");
            }
        }
        // Rotation: the same source reads the new value.
        std::fs::write(&file, "rotated").unwrap();
        assert_eq!(
            PasswordSource::File(file)
                .resolve()
                .unwrap()
                .unwrap()
                .expose(),
            "rotated"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_password_command_that_hangs_is_killed_at_its_deadline() {
        let argv = vec!["sleep".to_string(), "30".to_string()];
        let start = std::time::Instant::now();
        let e = run_with_deadline(&argv, std::time::Duration::from_millis(300)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("killed"), "{e}");
        assert!(start.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn failures_name_the_source_not_the_value() {
        let e = PasswordSource::Env("TRIBUTARY_TEST_UNSET_VAR".into())
            .resolve()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Authentication);
        assert!(e.to_string().contains("TRIBUTARY_TEST_UNSET_VAR"), "{e}");
        let e = PasswordSource::Command(vec![
            "sh".into(),
            "-c".into(),
            "echo s3cr3t >&2; exit 3".into(),
        ])
        .resolve()
        .unwrap_err();
        assert!(
            !e.to_string().contains("s3cr3t") && e.to_string().contains("failed"),
            "{e}"
        );
    }
}
