//! One check that reports every server-setting and privilege problem at once,
//! each with the exact fix, before a reader starts.

use std::collections::HashMap;
use std::fmt;

use mysql_async::prelude::Queryable;
use tributary_core::{Error, ErrorKind, Result};

use crate::config::MySqlSourceConfig;
use crate::conn::{Flavor, connect, flavor, map_err};

/// One thing the server must change, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub what: String,
    pub found: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is {}; fix: {}", self.what, self.found, self.fix)
    }
}

/// What the check found on the server.
#[derive(Debug, Clone)]
pub struct ServerReport {
    pub flavor: Flavor,
    pub version: String,
    pub problems: Vec<Problem>,
}

impl ServerReport {
    /// Only the server settings that would lose changes (what a reader
    /// refuses at start); privileges granted through roles do not show in
    /// `SHOW GRANTS` lines, and a missing one fails the dump by name anyway.
    pub fn settings_only(mut self) -> ServerReport {
        self.problems.retain(|p| !p.what.starts_with("privilege "));
        self
    }

    /// `Ok` if there is nothing to fix, else one error listing every problem.
    pub fn into_result(self) -> Result<ServerReport> {
        if self.problems.is_empty() {
            return Ok(self);
        }
        let list: Vec<String> = self.problems.iter().map(|p| format!("- {p}")).collect();
        Err(Error::new(
            ErrorKind::InvalidConfig,
            format!(
                "the MySQL server is not ready for change capture:\n{}",
                list.join("\n")
            ),
        ))
    }
}

/// What a binlog reader needs from the server's variables.
fn setting_problems(flavor: Flavor, vars: &HashMap<String, String>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut want = |name: &str, value: &str, fix: &str| {
        let found = vars.get(name).map(|v| v.to_ascii_uppercase());
        if found.as_deref() != Some(value) {
            problems.push(Problem {
                what: name.to_string(),
                found: found.unwrap_or_else(|| "not set".into()),
                fix: fix.to_string(),
            });
        }
    };
    want(
        "log_bin",
        "ON",
        "start the server with --log-bin=mysql-bin (binary logging cannot be enabled at runtime)",
    );
    want(
        "binlog_format",
        "ROW",
        "SET GLOBAL binlog_format = 'ROW' and binlog_format=ROW in the server config",
    );
    want(
        "binlog_row_image",
        "FULL",
        "SET GLOBAL binlog_row_image = 'FULL' and binlog_row_image=FULL in the server config",
    );
    want(
        "binlog_row_metadata",
        "FULL",
        "SET GLOBAL binlog_row_metadata = 'FULL' and binlog_row_metadata=FULL in the server config \
         (MySQL ≥ 8.0.1, MariaDB ≥ 10.5)",
    );
    if flavor == Flavor::MariaDb {
        want(
            "log_bin_compress",
            "OFF",
            "SET GLOBAL log_bin_compress = OFF (compressed row events cannot be decoded)",
        );
    }
    problems
}

/// What the user's grants lack (`SHOW GRANTS` lines).
fn grant_problems(flavor: Flavor, grants: &[String]) -> Vec<Problem> {
    let global: Vec<String> = grants
        .iter()
        .filter(|g| g.contains(" ON *.* "))
        .map(|g| g.to_ascii_uppercase())
        .collect();
    if global.iter().any(|g| g.contains("ALL PRIVILEGES")) {
        return Vec::new();
    }
    let has = |p: &str| global.iter().any(|g| g.contains(p));
    let mut problems = Vec::new();
    if !(has("REPLICATION SLAVE") || has("REPLICATION REPLICA")) {
        problems.push(Problem {
            what: "privilege REPLICATION SLAVE".into(),
            found: "missing".into(),
            fix: "GRANT REPLICATION SLAVE ON *.* TO <user>".into(),
        });
    }
    let monitor = match flavor {
        Flavor::MariaDb => has("BINLOG MONITOR") || has("REPLICATION CLIENT") || has("SUPER"),
        Flavor::MySql => has("REPLICATION CLIENT") || has("SUPER"),
    };
    if !monitor {
        let grant = if flavor == Flavor::MariaDb {
            "BINLOG MONITOR"
        } else {
            "REPLICATION CLIENT"
        };
        problems.push(Problem {
            what: format!("privilege {grant}"),
            found: "missing".into(),
            fix: format!("GRANT {grant} ON *.* TO <user> (needed to read the binlog position)"),
        });
    }
    problems
}

/// Connects and checks settings and privileges for binlog reading.
pub async fn check_server(config: &MySqlSourceConfig) -> Result<ServerReport> {
    let mut conn = connect(config).await?;
    let (flavor, version) = flavor(&mut conn).await?;
    let rows: Vec<(String, String)> = conn
        .query(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN \
             ('log_bin', 'binlog_format', 'binlog_row_image', 'binlog_row_metadata', 'log_bin_compress')",
        )
        .await
        .map_err(|e| map_err("SHOW GLOBAL VARIABLES", e))?;
    let vars: HashMap<String, String> = rows
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let grants: Vec<String> = conn
        .query("SHOW GRANTS FOR CURRENT_USER()")
        .await
        .map_err(|e| map_err("SHOW GRANTS", e))?;
    let mut problems = setting_problems(flavor, &vars);
    problems.extend(grant_problems(flavor, &grants));
    Ok(ServerReport {
        flavor,
        version,
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_bad_setting_is_reported_with_its_fix() {
        let good = vars(&[
            ("log_bin", "ON"),
            ("binlog_format", "ROW"),
            ("binlog_row_image", "FULL"),
            ("binlog_row_metadata", "FULL"),
            ("log_bin_compress", "OFF"),
        ]);
        assert!(setting_problems(Flavor::MariaDb, &good).is_empty());
        let bad = vars(&[
            ("log_bin", "OFF"),
            ("binlog_format", "MIXED"),
            ("binlog_row_image", "MINIMAL"),
        ]);
        let p = setting_problems(Flavor::MariaDb, &bad);
        let names: Vec<&str> = p.iter().map(|p| p.what.as_str()).collect();
        assert_eq!(
            names,
            [
                "log_bin",
                "binlog_format",
                "binlog_row_image",
                "binlog_row_metadata",
                "log_bin_compress"
            ]
        );
        assert!(
            p[1].to_string()
                .contains("SET GLOBAL binlog_format = 'ROW'")
        );
        assert_eq!(p[3].found, "not set");
    }

    #[test]
    fn missing_replication_grants_are_reported() {
        let all =
            vec!["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION".to_string()];
        assert!(grant_problems(Flavor::MariaDb, &all).is_empty());
        let select_only = vec!["GRANT SELECT ON `shop`.* TO `cdc`@`%`".to_string()];
        let p = grant_problems(Flavor::MariaDb, &select_only);
        assert_eq!(p.len(), 2);
        assert!(p[0].fix.contains("REPLICATION SLAVE") && p[1].fix.contains("BINLOG MONITOR"));
        let report = ServerReport {
            flavor: Flavor::MariaDb,
            version: String::new(),
            problems: p.clone(),
        };
        assert!(
            report.settings_only().into_result().is_ok(),
            "privileges do not stop a start"
        );
        let repl = vec!["GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `cdc`@`%`".to_string()];
        assert!(grant_problems(Flavor::MariaDb, &repl).is_empty());
    }
}
