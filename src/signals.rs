//! Process signals, in one place: SIGTERM and SIGINT ask for a graceful
//! stop (contract §5.8), SIGHUP asks for the institution keys to be read
//! again ([`reload_keys_on_hangup`], for `run` and `notify` alike). Handlers are installed first thing, so a signal during start-up
//! is handled, never the default action.

use std::path::PathBuf;
use std::sync::Arc;

#[cfg(unix)]
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::config::Config;
use crate::keys::KeyRing;

/// SIGTERM/SIGINT, installed.
pub struct Stop {
    #[cfg(unix)]
    term: Option<Signal>,
    #[cfg(unix)]
    int: Option<Signal>,
}

/// SIGHUP, installed.
pub struct Hangups {
    #[cfg(unix)]
    hup: Option<Signal>,
}

/// Installs the stop and hangup handlers.
pub fn install() -> (Stop, Hangups) {
    #[cfg(unix)]
    {
        (
            Stop {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            },
            Hangups {
                hup: signal(SignalKind::hangup()).ok(),
            },
        )
    }
    #[cfg(not(unix))]
    (Stop {}, Hangups {})
}

impl Stop {
    /// Resolves on the first SIGTERM or SIGINT (Ctrl-C elsewhere).
    pub async fn recv(self) {
        #[cfg(unix)]
        if let (Some(mut term), Some(mut int)) = (self.term, self.int) {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

impl Hangups {
    /// Resolves on the next SIGHUP; `false` when none can come.
    pub async fn next(&mut self) -> bool {
        #[cfg(unix)]
        if let Some(hup) = self.hup.as_mut() {
            return hup.recv().await.is_some();
        }
        false
    }
}

/// Installs the stop handlers and waits for one (for the simple commands).
pub async fn stopped() {
    install().0.recv().await
}

/// Key rotation without a restart (contract §11: a rotation reaches the
/// worker and the notify receiver alike): on SIGHUP the settings are read
/// again (file and environment) and, if valid, the institution keys are
/// replaced. Other settings take effect only at the next start.
pub async fn reload_keys_on_hangup(
    mut hangups: Hangups,
    source: Option<PathBuf>,
    keys: Arc<KeyRing>,
) {
    while hangups.next().await {
        match Config::load(source.as_deref()) {
            Ok(c) => {
                let inst_nos: Vec<String> = c
                    .institutions
                    .inst_nos()
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                keys.replace(c.institutions);
                tracing::info!(
                    ?inst_nos,
                    "SIGHUP: institution keys reloaded (other settings need a restart)"
                );
            }
            Err(e) => tracing::error!(
                error = %e,
                "SIGHUP: settings not reloaded; the current keys stay"
            ),
        }
    }
}
