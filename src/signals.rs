//! Process signals, in one place: SIGTERM and SIGINT ask for a graceful
//! stop (contract §5.8), SIGHUP asks for the institution keys to be read
//! again. Handlers are installed first thing, so a signal during start-up
//! is handled, never the default action.

#[cfg(unix)]
use tokio::signal::unix::{Signal, SignalKind, signal};

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
