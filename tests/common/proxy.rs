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
/// peers see refused connections) and restored on the same port.
pub struct Proxy {
    pub port: u16,
    target: SocketAddr,
    inner: Arc<Mutex<ProxyInner>>,
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
        let acceptor = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let link = tokio::spawn(async move {
                    if let Ok(mut upstream) = TcpStream::connect(target).await {
                        let _ = client.set_nodelay(true);
                        let _ = upstream.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
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

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}
