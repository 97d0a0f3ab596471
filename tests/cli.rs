//! The CLI prints its version and help, and names what is missing.

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
fn help_lists_the_working_subcommands() {
    let (ok, out) = tributary(&["--help"]);
    assert!(ok, "{out}");
    assert!(out.contains("MySQL/MariaDB changes"), "{out}");
    for command in ["sync", "status"] {
        assert!(
            out.contains(&format!("  {command} ")),
            "{command} in:\n{out}"
        );
    }
}

#[test]
fn a_subcommand_without_its_pipeline_file_fails_with_usage() {
    let (ok, out) = tributary(&["sync"]);
    assert!(!ok);
    assert!(out.contains("Usage") && out.contains("--config"), "{out}");
    let (ok, out) = tributary(&["sync", "--config", "/nonexistent/pipeline.toml"]);
    assert!(!ok);
    assert!(
        out.contains("cannot read /nonexistent/pipeline.toml"),
        "{out}"
    );
}
