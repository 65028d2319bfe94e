//! A TCP proxy of the tests' own, between a process and RabbitMQ, Redis or
//! the gateway: cutting it is an outage for that process alone (nothing
//! shared is stopped). Shared by the integration tests and the fault suite.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP proxy that can be cut (listener closed, live connections dropped:
/// peers see refused connections) and restored on the same port, or
/// stalled (connections stay open, no byte moves: a broker that hangs).
pub struct Proxy {
    pub port: u16,
    target: SocketAddr,
    inner: Arc<Mutex<ProxyInner>>,
    stalled: tokio::sync::watch::Sender<bool>,
}

struct ProxyInner {
    acceptor: Option<JoinHandle<()>>,
    links: Vec<JoinHandle<()>>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let p = Proxy {
            port: crate::net::free_port().expect("a free port"),
            target,
            inner: Arc::new(Mutex::new(ProxyInner {
                acceptor: None,
                links: Vec::new(),
            })),
            stalled: tokio::sync::watch::channel(false).0,
        };
        p.restore().await;
        p
    }

    /// Listens again (on the same port) and forwards.
    pub async fn restore(&self) {
        let mut listener = None;
        for _ in 0..100 {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let listener = listener.unwrap_or_else(|| panic!("cannot rebind proxy port {}", self.port));
        let target = self.target;
        let inner = self.inner.clone();
        let stalled = self.stalled.subscribe();
        let acceptor = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let stalled = stalled.clone();
                let link = tokio::spawn(async move {
                    if let Ok(upstream) = TcpStream::connect(target).await {
                        let _ = client.set_nodelay(true);
                        let _ = upstream.set_nodelay(true);
                        let (cr, cw) = client.into_split();
                        let (ur, uw) = upstream.into_split();
                        tokio::join!(pump(cr, uw, stalled.clone()), pump(ur, cw, stalled));
                    }
                });
                if let Ok(mut g) = inner.lock() {
                    g.links.retain(|l| !l.is_finished());
                    g.links.push(link);
                }
            }
        });
        if let Ok(mut g) = self.inner.lock() {
            g.acceptor = Some(acceptor);
        }
    }

    /// Holds every byte in both directions until [`Proxy::resume`]: the
    /// connections stay open and silent.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    pub fn resume(&self) {
        self.stalled.send_replace(false);
    }

    /// Closes the listener and every live connection.
    pub fn cut(&self) {
        if let Ok(mut g) = self.inner.lock() {
            if let Some(a) = g.acceptor.take() {
                a.abort();
            }
            for l in g.links.drain(..) {
                l.abort();
            }
        }
    }
}

/// Copies one direction, holding what it read while the proxy is stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if stalled.wait_for(|s| !*s).await.is_err() {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}
