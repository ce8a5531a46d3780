//! The operator's hand on a running server: signals (SIGTERM and SIGINT
//! shut down with a 205 to everyone, SIGHUP reloads, SIGUSR1/2 are ignored
//! with a word) and systemd's service notifications.

use super::{Server, ServerError, instant_after};
use signal_hook::consts::{SIGHUP, SIGINT, SIGUSR1, SIGUSR2};
use std::time::Instant;

/// Tells systemd (when `NOTIFY_SOCKET` is set) how the service is doing; a
/// no-op otherwise.
pub(super) fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        log::debug!("sd_notify failed: {error}");
    }
}

impl Server {
    pub(super) fn handle_signals(&mut self, now: Instant) -> Result<(), ServerError> {
        let pending: Vec<i32> = self.signals.pending().collect();
        for signal in pending {
            match signal {
                SIGHUP => self.reload(),
                SIGUSR1 | SIGUSR2 => {
                    let name = if signal == SIGUSR1 {
                        "SIGUSR1"
                    } else {
                        "SIGUSR2"
                    };
                    log::warn!(
                        "{name} ignored: SIGHUP reloads the configuration (and reopens \
                         log_file in daemon mode), SIGTERM stops riftd"
                    );
                }
                _ => {
                    let name = if signal == SIGINT {
                        "SIGINT"
                    } else {
                        "SIGTERM"
                    };
                    if self.shutdown_deadline.is_some() {
                        log::warn!("{name} again during shutdown: exiting now");
                        return Err(ServerError::ForcedExit);
                    }
                    log::info!("{name}: shutting down");
                    self.begin_shutdown(now);
                }
            }
        }
        Ok(())
    }

    /// Stops accepting and tells every client 205; the loop then flushes and
    /// ends when all are gone or the deadline passes.
    fn begin_shutdown(&mut self, now: Instant) {
        notify(&[sd_notify::NotifyState::Stopping]);
        for listener in &mut self.listeners {
            let _ = self.poll.registry().deregister(&mut listener.socket);
        }
        self.listeners.clear();
        self.accept_ready.clear();
        self.accept_paused_until = None;
        self.hub.handle_shutdown();
        self.shutdown_deadline = Some(instant_after(now, self.config.shutdown_timeout()));
    }

    pub(super) fn reload(&mut self) {
        let Some(reloader) = self.reloader.as_mut() else {
            log::info!("SIGHUP: no config file to reload");
            return;
        };
        notify(&[sd_notify::NotifyState::Reloading]);
        match reloader() {
            Ok(mut config) => {
                if config.listen() != self.config.listen()
                    || config.tls_listen() != self.config.tls_listen()
                    || config.web_listen() != self.config.web_listen()
                    || config.web_tls_listen() != self.config.web_tls_listen()
                {
                    log::warn!(
                        "SIGHUP: listen, tls_listen, web_listen or web_tls_listen changed; that needs a restart"
                    );
                    config.keep_listen_of(&self.config);
                }
                if config.tls().is_none()
                    && self.listeners.iter().any(|listener| listener.kind.is_tls())
                {
                    // The TLS listeners stay until a restart (socket
                    // activation passes them whatever tls_listen says):
                    // without a certificate each connection to them was
                    // refused.
                    log::warn!(
                        "SIGHUP: tls_cert and tls_key removed while riftd listens for TLS; \
                         that needs a restart, until then riftd keeps the certificate it has"
                    );
                    config.keep_tls_of(&self.config);
                }
                if config.pid_file() != self.config.pid_file()
                    || config.log_file() != self.config.log_file()
                {
                    // Both are opened once, at start (SIGHUP reopens the
                    // log riftd started with, for logrotate): said, not
                    // silently ignored.
                    log::warn!(
                        "SIGHUP: pid_file or log_file changed; that needs a restart, \
                         until then riftd keeps the ones it started with"
                    );
                    config.keep_daemon_files_of(&self.config);
                }
                if !config.has_journal_of(&self.config) {
                    // The journal is opened once: history goes on exactly
                    // as it started (on or off, same file, same fsync)
                    // rather than half-applied.
                    log::warn!(
                        "SIGHUP: history_file or history_fsync changed; that needs a restart, \
                         until then history stays {}",
                        match self.config.history() {
                            Some(history) => format!(
                                "on in {} with history_fsync = \"{}\"",
                                history.file.display(),
                                format!("{:?}", history.fsync).to_lowercase()
                            ),
                            None => "off".to_owned(),
                        }
                    );
                    config.keep_history_of(&self.config);
                }
                for (_, conn) in self.conns.iter_mut() {
                    conn.set_max_line(config.max_line_bytes());
                }
                self.hub.set_config(config.hub_config());
                self.config = config;
                log::info!("SIGHUP: configuration reloaded");
            }
            Err(error) => log::error!("SIGHUP: {error}; keeping the old configuration"),
        }
        notify(&[sd_notify::NotifyState::Ready]);
    }
}
