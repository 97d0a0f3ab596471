//! The CLI prints its version and help, and lists no subcommand that does not work.

use std::process::Command;

fn tributary(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn version_prints_the_package_version() {
    let (ok, out) = tributary(&["--version"]);
    assert!(ok, "{out}");
    assert_eq!(
        out.trim(),
        format!("tributary {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_describes_the_tool_without_subcommands_yet() {
    let (ok, out) = tributary(&["--help"]);
    assert!(ok, "{out}");
    assert!(out.contains("MySQL/MariaDB changes"), "{out}");
    assert!(
        !out.contains("Commands:"),
        "no subcommand works yet, none may be listed:\n{out}"
    );
}

#[test]
fn unknown_arguments_fail_with_usage() {
    let (ok, out) = tributary(&["sync"]);
    assert!(!ok);
    assert!(out.contains("Usage"), "{out}");
}
