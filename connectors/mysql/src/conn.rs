//! Connections: options from the config, the password read at connect time
//! (and re-read once after an authentication failure, for rotation), and
//! mysql_async errors mapped to core error kinds.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use tributary_core::{Error, ErrorKind, Result};

use crate::config::MySqlSourceConfig;

/// Server flavor: the binlog protocols differ (GTID events and resume).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MariaDb,
    /// MySQL 5.7/8.x. The MySQL paths are written to the protocol but untested
    /// here: only MariaDB can run in this project's test environment.
    MySql,
}

impl Flavor {
    pub fn from_version(version: &str) -> Flavor {
        if version.to_ascii_lowercase().contains("mariadb") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        }
    }
}

const ER_ACCESS_DENIED: u16 = 1045;
pub(crate) const ER_MASTER_FATAL_READING_BINLOG: u16 = 1236;

/// The kind of a server error, by its code: 1045 access denied →
/// Authentication; 1236 (binlog position unreadable) → PositionLost;
/// missing privileges (1044, 1142, 1143, 1227) → InvalidConfig (grant them);
/// unknown database or table (1049, 1146) → NotFound; overload, shutdown,
/// lock timeouts, deadlocks and killed connections or queries (1040, 1053,
/// 1077, 1158–1161, 1205, 1213, 1317, 1927, 1969, 3024) → Connection
/// (transient); anything else → Unexpected.
fn server_error_kind(code: u16) -> ErrorKind {
    match code {
        ER_ACCESS_DENIED => ErrorKind::Authentication,
        ER_MASTER_FATAL_READING_BINLOG => ErrorKind::PositionLost,
        1044 | 1142 | 1143 | 1227 => ErrorKind::InvalidConfig,
        1049 | 1146 => ErrorKind::NotFound,
        1040 | 1053 | 1077 | 1158..=1161 | 1205 | 1213 | 1317 | 1927 | 1969 | 3024 => {
            ErrorKind::Connection
        }
        _ => ErrorKind::Unexpected,
    }
}

/// The one mapping of mysql_async errors to core errors, with `what` as
/// the message: server errors by code, I/O and a closed connection as
/// Connection (transient), a bad
/// URL as InvalidConfig, driver and other errors as Unexpected.
pub(crate) fn map_err(what: impl Into<String>, e: mysql_async::Error) -> Error {
    let kind = match &e {
        mysql_async::Error::Server(s) => server_error_kind(s.code),
        mysql_async::Error::Io(_)
        | mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed) => {
            ErrorKind::Connection
        }
        mysql_async::Error::Url(_) => ErrorKind::InvalidConfig,
        mysql_async::Error::Driver(_) | mysql_async::Error::Other(_) => ErrorKind::Unexpected,
    };
    Error::new(kind, what).with_source(e)
}

/// The largest packet the binlog connection accepts: 1 GiB, the protocol's
/// maximum and what replicas use (`slave_max_allowed_packet`). Without it
/// the client keeps the server's session default (16 MiB), and one event
/// of a big row (an 8 MB BLOB updated: before and after image) kills the
/// stream.
const DUMP_MAX_PACKET: usize = 1 << 30;

fn opts(config: &MySqlSourceConfig, password: Option<&str>, dump: bool) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname(config.host.clone())
        .tcp_port(config.port)
        .user(Some(config.user.clone()))
        .pass(password.map(str::to_string))
        .prefer_socket(false)
        .max_allowed_packet(dump.then_some(DUMP_MAX_PACKET))
}

/// Opens a connection. If the server rejects the password, the password source
/// is read again and, if it changed (rotation), the connection is retried once.
pub async fn connect(config: &MySqlSourceConfig) -> Result<Conn> {
    connect_with(config, false).await
}

/// A connection for the binlog dump: packets up to 1 GiB.
pub(crate) async fn connect_for_dump(config: &MySqlSourceConfig) -> Result<Conn> {
    connect_with(config, true).await
}

async fn connect_with(config: &MySqlSourceConfig, dump: bool) -> Result<Conn> {
    let password = config.password.resolve()?;
    let first = Conn::new(opts(config, password.as_ref().map(|p| p.expose()), dump)).await;
    let e = match first {
        Ok(conn) => return Ok(conn),
        Err(e) => e,
    };
    let denied = matches!(&e, mysql_async::Error::Server(s) if s.code == ER_ACCESS_DENIED);
    if denied {
        let fresh = config.password.resolve()?;
        if fresh != password {
            tracing::info!(user = %config.user, "password changed at its source; reconnecting");
            return Conn::new(opts(config, fresh.as_ref().map(|p| p.expose()), dump))
                .await
                .map_err(|e| connect_error(config, e));
        }
    }
    Err(connect_error(config, e))
}

fn connect_error(config: &MySqlSourceConfig, e: mysql_async::Error) -> Error {
    map_err(
        format!(
            "cannot connect to MySQL at {}:{} as {}",
            config.host, config.port, config.user
        ),
        e,
    )
    .with_context("password", format!("{:?}", config.password))
}

/// The server's flavor from `SELECT VERSION()`.
pub async fn flavor(conn: &mut Conn) -> Result<(Flavor, String)> {
    let version: String = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(|e| map_err("SELECT VERSION()", e))?
        .unwrap_or_default();
    Ok((Flavor::from_version(&version), version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_map_by_code() {
        assert_eq!(server_error_kind(1045), ErrorKind::Authentication);
        assert_eq!(server_error_kind(1236), ErrorKind::PositionLost);
        assert_eq!(server_error_kind(1227), ErrorKind::InvalidConfig);
        assert_eq!(server_error_kind(1146), ErrorKind::NotFound);
        assert!(server_error_kind(1213).is_transient(), "deadlock");
        assert!(
            server_error_kind(1040).is_transient(),
            "too many connections"
        );
        assert!(!server_error_kind(1064).is_transient(), "syntax");
    }
}
