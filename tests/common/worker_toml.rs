//! The worker settings the fault suite and the cluster suite share: all
//! but `[amqp]` and `[redis]`, which differ (one node against clusters).

#![allow(dead_code)]

/// From `[gateway]` to `[log]`: the gateway on `gateway_port`, one
/// institution with `key`, notifies on `notify_port`, `reconcile` as the
/// `[reconcile]` table's body.
pub fn worker_toml_rest(gateway_port: u16, key: &str, notify_port: u16, reconcile: &str) -> String {
    format!(
        r#"[gateway]
url = "http://127.0.0.1:{gateway_port}/api/openpay/v3/h5pay"
connect_timeout_ms = 500
request_timeout_ms = 3000

[retry]
initial_ms = 100
max_interval_ms = 1000
max_attempts = 6
max_elapsed_ms = 60000

[breaker]
enabled = true
failure_threshold = 10
open_ms = 500
max_open_ms = 2000

[[institutions]]
inst_no = "60000001"
key = "{key}"

[worker]
shutdown_grace_secs = 15

[notify]
listen = "127.0.0.1:{notify_port}"
public_url = "http://127.0.0.1:{notify_port}/h5pay/notify"

[reconcile]
{reconcile}

[log]
format = "json"
level = "info"
"#
    )
}
