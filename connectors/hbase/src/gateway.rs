//! One connection to a Thrift2 gateway (blocking, as the `thrift` crate
//! is): connected on first use, dropped after any error so the next call
//! reconnects. The sink runs it on tokio's blocking pool.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TCompactInputProtocol, TCompactOutputProtocol,
    TInputProtocol, TOutputProtocol,
};
use thrift::transport::{
    TBufferedReadTransport, TBufferedWriteTransport, TFramedReadTransport, TFramedWriteTransport,
    TIoChannel, TTcpChannel,
};
use tributary_core::{Error, ErrorKind, Result};

use crate::hbase2::{
    TDelete, TGet, THBaseServiceSyncClient, TPut, TResult, TTHBaseServiceSyncClient,
};

type Client =
    THBaseServiceSyncClient<Box<dyn TInputProtocol + Send>, Box<dyn TOutputProtocol + Send>>;

/// How to reach a gateway (HBase's `hbase thrift2` server: `-f` framed,
/// `-c` compact; the defaults are neither).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub address: String,
    pub framed: bool,
    pub compact: bool,
    pub timeout: Duration,
}

pub struct Gateway {
    endpoint: Endpoint,
    client: Option<Client>,
}

/// The one mapping of Thrift2 errors: transport failures and the
/// gateway's TIOError (region servers moving, unreachable) are transient,
/// except a TIOError naming a missing table (NotFound); protocol errors are
/// bad data; application errors (unknown method, internal error) are not
/// retried.
fn classify(what: &str, e: thrift::Error) -> Error {
    let io_message = match &e {
        thrift::Error::User(u) => u
            .downcast_ref::<crate::hbase2::TIOError>()
            .and_then(|io| io.message.clone()),
        _ => None,
    };
    let kind = match &e {
        thrift::Error::Transport(_) => ErrorKind::Connection,
        thrift::Error::User(_) => match &io_message {
            Some(m) if m.contains("TableNotFoundException") => ErrorKind::NotFound,
            _ => ErrorKind::Connection,
        },
        thrift::Error::Application(_) => ErrorKind::Unexpected,
        thrift::Error::Protocol(_) => ErrorKind::InvalidData,
    };
    // The gateway's TIOError carries the server's exception text: keep its
    // first line.
    let message = match &io_message {
        Some(m) => format!("HBase Thrift2 {what}: {}", m.lines().next().unwrap_or(m)),
        None => format!("HBase Thrift2 {what}"),
    };
    Error::new(kind, message).with_source(e)
}

impl Gateway {
    pub fn new(endpoint: Endpoint) -> Gateway {
        Gateway {
            endpoint,
            client: None,
        }
    }

    fn connect(&self) -> Result<Client> {
        let e = &self.endpoint;
        let io = |err: std::io::Error| {
            Error::new(
                ErrorKind::Connection,
                format!("connecting to the HBase Thrift2 gateway {}", e.address),
            )
            .with_source(err)
        };
        let addr = e
            .address
            .to_socket_addrs()
            .map_err(io)?
            .next()
            .ok_or_else(|| {
                Error::invalid_config(format!("{} resolves to no address", e.address))
            })?;
        let stream = TcpStream::connect_timeout(&addr, e.timeout).map_err(io)?;
        stream.set_read_timeout(Some(e.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(e.timeout)).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        let (read, write) = TTcpChannel::with_stream(stream)
            .split()
            .map_err(|err| classify("connection", err))?;
        let (read, write): (
            Box<dyn std::io::Read + Send>,
            Box<dyn std::io::Write + Send>,
        ) = if e.framed {
            (
                Box::new(TFramedReadTransport::new(read)),
                Box::new(TFramedWriteTransport::new(write)),
            )
        } else {
            (
                Box::new(TBufferedReadTransport::new(read)),
                Box::new(TBufferedWriteTransport::new(write)),
            )
        };
        let (i, o): (
            Box<dyn TInputProtocol + Send>,
            Box<dyn TOutputProtocol + Send>,
        ) = if e.compact {
            (
                Box::new(TCompactInputProtocol::new(read)),
                Box::new(TCompactOutputProtocol::new(write)),
            )
        } else {
            (
                Box::new(TBinaryInputProtocol::new(read, true)),
                Box::new(TBinaryOutputProtocol::new(write, true)),
            )
        };
        Ok(THBaseServiceSyncClient::new(i, o))
    }

    /// Runs `call` on a live connection; any error drops the connection.
    fn call<T>(
        &mut self,
        what: &str,
        call: impl FnOnce(&mut Client) -> thrift::Result<T>,
    ) -> Result<T> {
        if self.client.is_none() {
            self.client = Some(self.connect()?);
        }
        let client = self.client.as_mut().expect("connected above");
        call(client).map_err(|e| {
            self.client = None;
            classify(what, e)
        })
    }

    pub fn put_multiple(&mut self, table: &str, puts: Vec<TPut>) -> Result<()> {
        let r = self.call("putMultiple", |c| {
            c.put_multiple(table.as_bytes().to_vec(), puts)
        });
        self.named_if_missing(table, r)
    }

    pub fn delete_multiple(&mut self, table: &str, deletes: Vec<TDelete>) -> Result<()> {
        let r = self.call("deleteMultiple", |c| {
            c.delete_multiple(table.as_bytes().to_vec(), deletes)
        });
        self.named_if_missing(table, r.map(drop))
    }

    /// A batch call on a missing table fails with a summary TIOError
    /// ("Failed 1 action: …") that says neither why nor that a retry cannot
    /// help; `tableExists` tells, so a failed batch is checked once.
    fn named_if_missing<T>(&mut self, table: &str, r: Result<T>) -> Result<T> {
        let Err(e) = r else { return r };
        if e.kind() != ErrorKind::Connection || !e.message().contains(": Failed ") {
            return Err(e);
        }
        let (ns, qualifier) = match table.split_once(':') {
            Some((ns, q)) => (Some(ns.as_bytes().to_vec()), q.as_bytes().to_vec()),
            None => (None, table.as_bytes().to_vec()),
        };
        let name = crate::hbase2::TTableName::new(ns, qualifier);
        match self.call("tableExists", |c| c.table_exists(name)) {
            Ok(false) => Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "HBase table {table} does not exist: create it with its column family \
                     first (the sink never creates tables)"
                ),
            )
            .with_source(e)),
            _ => Err(e),
        }
    }

    pub fn get(&mut self, table: &str, row: &[u8]) -> Result<TResult> {
        self.call("get", |c| {
            c.get(table.as_bytes().to_vec(), TGet::new(row.to_vec(), None))
        })
    }

    pub fn exists(&mut self, table: &str, row: &[u8]) -> Result<bool> {
        self.call("exists", |c| {
            c.exists(table.as_bytes().to_vec(), TGet::new(row.to_vec(), None))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tio_error_keeps_its_message_and_a_missing_table_is_not_found() {
        let io =
            |m: &str| thrift::Error::User(Box::new(crate::hbase2::TIOError::new(m.to_string())));
        let e = classify(
            "get",
            io("org.apache.hadoop.hbase.TableNotFoundException: t\n at …"),
        );
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert!(e.message().contains("TableNotFoundException: t"), "{e}");
        let e = classify("putMultiple", io("Failed 1 action: t: 1 time"));
        assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
        assert!(e.message().contains(": Failed 1 action"), "{e}");
    }
}
