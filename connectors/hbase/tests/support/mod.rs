//! A minimal HBase Thrift2 gateway for the tests — no HBase server can run
//! here. It serves only the four calls the sink uses (`exists`, `get`,
//! `putMultiple`, `deleteMultiple`, binary protocol, buffered transport)
//! over an in-memory store with HBase's version semantics: a cell's value is
//! its newest put whose timestamp is above every delete marker covering it
//! (row deletes and DELETE_COLUMNS markers mask versions ≤ their timestamp,
//! whatever order they arrive in). It can be killed (the port refuses
//! connections, open connections are cut) and restarted with its data.

use std::collections::{BTreeMap, HashMap};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::server::TProcessor;
use thrift::transport::{TBufferedReadTransport, TBufferedWriteTransport};
use tributary_hbase::hbase2::{
    TColumnValue, TDelete, TDeleteType, TGet, THBaseServiceSyncHandler, THBaseServiceSyncProcessor,
    TPut, TResult,
};

#[derive(Default, Clone)]
struct Row {
    /// qualifier → timestamp → value
    puts: HashMap<Vec<u8>, BTreeMap<i64, Vec<u8>>>,
    row_marker: Option<i64>,
    column_markers: HashMap<Vec<u8>, i64>,
}

impl Row {
    fn visible(&self) -> Cells {
        let mut out = BTreeMap::new();
        for (q, versions) in &self.puts {
            let floor = self.row_marker.max(self.column_markers.get(q).copied());
            if let Some((ts, v)) = versions.iter().next_back()
                && floor.is_none_or(|f| *ts > f)
            {
                out.insert(q.clone(), (*ts, v.clone()));
            }
        }
        out
    }
}

type Store = HashMap<Vec<u8>, BTreeMap<Vec<u8>, Row>>;

/// "family:qualifier" → (timestamp, value) of a row's visible cells.
pub type Cells = BTreeMap<Vec<u8>, (i64, Vec<u8>)>;

#[derive(Clone, Default)]
struct Handler {
    store: Arc<Mutex<Store>>,
}

fn qualifier(family: &[u8], q: &[u8]) -> Vec<u8> {
    [family, b":", q].concat()
}

impl THBaseServiceSyncHandler for Handler {
    fn handle_exists(&self, table: Vec<u8>, tget: TGet) -> thrift::Result<bool> {
        Ok(!self.handle_get(table, tget)?.column_values.is_empty())
    }

    fn handle_get(&self, table: Vec<u8>, tget: TGet) -> thrift::Result<TResult> {
        let store = self.store.lock().unwrap();
        let cells = store
            .get(&table)
            .and_then(|t| t.get(&tget.row))
            .map(Row::visible)
            .unwrap_or_default();
        let values: Vec<TColumnValue> = cells
            .into_iter()
            .map(|(fq, (ts, v))| {
                let (f, q) = fq.split_at(fq.iter().position(|b| *b == b':').unwrap());
                TColumnValue::new(f.to_vec(), q[1..].to_vec(), v, ts)
            })
            .collect();
        let row = (!values.is_empty()).then_some(tget.row);
        Ok(TResult::new(row, values))
    }

    fn handle_put_multiple(&self, table: Vec<u8>, tputs: Vec<TPut>) -> thrift::Result<()> {
        let mut store = self.store.lock().unwrap();
        let t = store.entry(table).or_default();
        for put in tputs {
            let row = t.entry(put.row).or_default();
            for cv in put.column_values {
                let ts = cv.timestamp.or(put.timestamp).unwrap_or(i64::MAX / 2);
                let q = qualifier(&cv.family, &cv.qualifier);
                row.puts.entry(q).or_default().insert(ts, cv.value);
            }
        }
        Ok(())
    }

    fn handle_delete_multiple(
        &self,
        table: Vec<u8>,
        tdeletes: Vec<TDelete>,
    ) -> thrift::Result<Vec<TDelete>> {
        let mut store = self.store.lock().unwrap();
        let t = store.entry(table).or_default();
        for d in tdeletes {
            let row = t.entry(d.row).or_default();
            let ts = d.timestamp.unwrap_or(i64::MAX / 2);
            match d.columns {
                None => row.row_marker = row.row_marker.max(Some(ts)),
                Some(columns) => {
                    for c in columns {
                        let q = qualifier(&c.family, c.qualifier.as_deref().unwrap_or_default());
                        let at = c.timestamp.unwrap_or(ts);
                        if d.delete_type == Some(TDeleteType::DELETE_COLUMN) {
                            row.puts.entry(q).or_default().remove(&at);
                        } else {
                            let m = row.column_markers.entry(q).or_insert(at);
                            *m = (*m).max(at);
                        }
                    }
                }
            }
        }
        Ok(Vec::new())
    }
}

/// The stand-in gateway.
pub struct HBaseStandIn {
    port: u16,
    handler: Handler,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl HBaseStandIn {
    pub fn start() -> HBaseStandIn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut s = HBaseStandIn {
            port,
            handler: Handler::default(),
            stop: Arc::new(AtomicBool::new(false)),
            connections: Arc::default(),
            acceptor: None,
        };
        s.serve(listener);
        s
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn serve(&mut self, listener: TcpListener) {
        let (handler, stop, conns) = (
            self.handler.clone(),
            self.stop.clone(),
            self.connections.clone(),
        );
        self.acceptor = Some(thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                conns.lock().unwrap().push(stream.try_clone().unwrap());
                let handler = handler.clone();
                thread::spawn(move || serve_connection(stream, handler));
            }
        }));
    }

    /// Closes the port and cuts every open connection.
    pub fn kill(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the acceptor
        if let Some(a) = self.acceptor.take() {
            a.join().unwrap();
        }
        for c in self.connections.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Serves again on the same port, with the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.stop.store(false, Ordering::SeqCst);
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        self.serve(listener);
    }

    /// Visible cells of every row: row → "family:qualifier" → (timestamp, value).
    pub fn rows(&self, table: &str) -> BTreeMap<Vec<u8>, Cells> {
        let store = self.handler.store.lock().unwrap();
        store
            .get(table.as_bytes())
            .map(|t| {
                t.iter()
                    .map(|(k, r)| (k.clone(), r.visible()))
                    .filter(|(_, cells)| !cells.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn serve_connection(stream: TcpStream, handler: Handler) {
    let processor = THBaseServiceSyncProcessor::new(handler);
    let read = TBufferedReadTransport::new(stream.try_clone().unwrap());
    let write = TBufferedWriteTransport::new(stream);
    let mut i = TBinaryInputProtocol::new(read, true);
    let mut o = TBinaryOutputProtocol::new(write, true);
    while processor.process(&mut i, &mut o).is_ok() {}
}

impl Drop for HBaseStandIn {
    fn drop(&mut self) {
        self.kill();
    }
}
