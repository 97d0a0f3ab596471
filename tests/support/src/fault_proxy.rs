//! A TCP proxy between a client under test and a real server that injects
//! the network faults production meets: a black-holed path (bytes vanish,
//! sockets stay open), a reply lost after the server applied the request,
//! and a request rewritten on the way (a server that ignores a header or a
//! parameter). Request/response protocols only (HTTP/1.1, buffered thrift):
//! a client's next request means its previous reply arrived.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[derive(Default)]
struct Faults {
    /// Connections numbered below this are black-holed.
    holed_below: AtomicU64,
    /// A request containing this loses its reply (the connection closes
    /// once the server answered), `drops_left` times.
    drop_reply_of: Mutex<Vec<u8>>,
    drops_left: AtomicUsize,
    /// Replies dropped so far.
    dropped: AtomicUsize,
    /// Same-length replacements in client → server bytes.
    rewrites: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
}

/// The proxy; dropped, it stops accepting (open connections end with it).
pub struct FaultProxy {
    port: u16,
    faults: Arc<Faults>,
    next: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    (!needle.is_empty())
        .then(|| hay.windows(needle.len()).position(|w| w == needle))
        .flatten()
}

impl FaultProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `target`.
    pub async fn start(target: impl Into<String>) -> FaultProxy {
        let target = target.into();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Faults::default());
        let next = Arc::new(AtomicU64::new(0));
        let (f, counter) = (faults.clone(), next.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let id = counter.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                tokio::spawn(relay(id, client, server, f.clone()));
            }
        });
        FaultProxy {
            port,
            faults,
            next,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Black-holes every connection made so far.
    pub fn black_hole(&self) {
        let made = self.next.load(Ordering::SeqCst);
        self.faults.holed_below.store(made, Ordering::SeqCst);
    }

    /// Black-holes every connection, also those made from now on, until
    /// `lift` (a network path that went dead).
    pub fn black_hole_all(&self) {
        self.faults.holed_below.store(u64::MAX, Ordering::SeqCst);
    }

    /// Connections made from now on pass again (those made while the path
    /// was dead stay dead, as their peers would find them).
    pub fn lift(&self) {
        let made = self.next.load(Ordering::SeqCst);
        self.faults.holed_below.store(made, Ordering::SeqCst);
    }

    /// The next `times` requests containing `marker` reach the server, and
    /// their replies are lost: the connection closes once the server answered.
    pub fn drop_reply_of(&self, marker: &[u8], times: usize) {
        *self.faults.drop_reply_of.lock().unwrap() = marker.to_vec();
        self.faults.drops_left.store(times, Ordering::SeqCst);
    }

    /// Replies dropped so far.
    pub fn dropped(&self) -> usize {
        self.faults.dropped.load(Ordering::SeqCst)
    }

    /// Replaces `from` by `to` (same length, so framing stays valid) in
    /// every request from now on.
    pub fn rewrite(&self, from: &[u8], to: &[u8]) {
        assert_eq!(from.len(), to.len(), "a rewrite keeps the length");
        let mut rewrites = self.faults.rewrites.lock().unwrap();
        rewrites.push((from.to_vec(), to.to_vec()));
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

async fn relay(
    id: u64,
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    faults: Arc<Faults>,
) {
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    // Set by the request direction: the next reply is to be dropped.
    let drop_next = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let up = forward(
        id,
        Box::new(cr),
        Box::new(sw),
        faults.clone(),
        drop_next.clone(),
        true,
    );
    let down = forward(id, Box::new(sr), Box::new(cw), faults, drop_next, false);
    // Either direction ending (or a dropped reply) ends the connection.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

async fn forward(
    id: u64,
    mut from: Reader,
    mut to: Writer,
    faults: Arc<Faults>,
    drop_next: Arc<std::sync::atomic::AtomicBool>,
    request: bool,
) {
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let mut n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if id < faults.holed_below.load(Ordering::SeqCst) {
            continue; // swallowed, the socket stays open
        }
        let inspect = request
            && (faults.drops_left.load(Ordering::SeqCst) > 0
                || !faults.rewrites.lock().unwrap().is_empty());
        if inspect {
            // Gather the rest of a request split across reads, so markers
            // and rewrites see it whole (only while a fault is armed: it
            // delays every request).
            while n < buf.len() {
                match tokio::time::timeout(Duration::from_millis(30), from.read(&mut buf[n..]))
                    .await
                {
                    Ok(Ok(m)) if m > 0 => n += m,
                    _ => break,
                }
            }
            for (old, new) in faults.rewrites.lock().unwrap().iter() {
                while let Some(at) = find(&buf[..n], old) {
                    buf[at..at + old.len()].copy_from_slice(new);
                }
            }
            let marker = faults.drop_reply_of.lock().unwrap().clone();
            if find(&buf[..n], &marker).is_some()
                && faults
                    .drops_left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| d.checked_sub(1))
                    .is_ok()
            {
                drop_next.store(true, Ordering::SeqCst);
            }
        } else if drop_next.load(Ordering::SeqCst) {
            faults.dropped.fetch_add(1, Ordering::SeqCst);
            return; // the server answered; the client never hears it
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
