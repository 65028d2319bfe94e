//! Ports for the processes a test or a benchmark starts. Shared by the
//! integration tests, the fault suite and `h5pay-bench` (one definition).

#![allow(dead_code)]

/// A loopback port free at the moment of asking (the OS's choice).
pub fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()
        .map(|a| a.port())
}

/// The text of `/metrics` on a worker's admin port (empty when the body
/// does not read).
pub async fn metrics(admin: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .expect("GET answered")
        .text()
        .await
        .unwrap_or_default()
}
