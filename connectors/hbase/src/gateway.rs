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
    let kind = match &e {
        thrift::Error::Transport(_) => ErrorKind::Connection,
        thrift::Error::User(u) => match u.downcast_ref::<crate::hbase2::TIOError>() {
            Some(io)
                if io
                    .message
                    .as_ref()
                    .is_some_and(|m| m.contains("TableNotFoundException")) =>
            {
                ErrorKind::NotFound
            }
            _ => ErrorKind::Connection,
        },
        thrift::Error::Application(_) => ErrorKind::Unexpected,
        thrift::Error::Protocol(_) => ErrorKind::InvalidData,
    };
    Error::new(kind, format!("HBase Thrift2 {what}")).with_source(e)
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
        self.call("putMultiple", |c| {
            c.put_multiple(table.as_bytes().to_vec(), puts)
        })
    }

    pub fn delete_multiple(&mut self, table: &str, deletes: Vec<TDelete>) -> Result<()> {
        self.call("deleteMultiple", |c| {
            c.delete_multiple(table.as_bytes().to_vec(), deletes)
        })
        .map(drop)
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
