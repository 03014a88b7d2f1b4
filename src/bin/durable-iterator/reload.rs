//! Key reload while `serve` runs: on SIGHUP, and when the configuration file or a key file
//! changes (their modification times are looked at every two seconds), the keys are read again
//! (see [`config::reload_keys`]) and swapped in. A reload that fails keeps the keys in force
//! and says why; keys generated for this run stay while none is configured.

use std::{ffi::OsString, path::PathBuf, time::Duration, time::SystemTime};

use durable_iterator::{KeyReloader, Keyring};

use crate::config;

/// How often the watched files' modification times are compared.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// The keys made for this run because none was configured: a reload that still finds none
/// keeps them.
pub(crate) struct Generated {
    pub(crate) keyring: Option<Keyring>,
    pub(crate) api_keys: Option<Vec<String>>,
}

impl Generated {
    /// The keyring, the number of signing keys, and the API keys to swap in.
    fn fill_in(
        &self,
        signing: Vec<String>,
        api: Vec<String>,
    ) -> Result<(Keyring, usize, Vec<String>), String> {
        let keyring = match (signing.is_empty(), &self.keyring) {
            (true, Some(generated)) => generated.clone(),
            (true, None) => return Err("no signing key configured any more".into()),
            (false, _) => Keyring::new(&signing).map_err(|e| e.to_string())?,
        };
        let api = match (api.is_empty(), &self.api_keys) {
            (true, Some(generated)) => generated.clone(),
            (true, None) => return Err("no API key configured any more".into()),
            (false, _) => api,
        };
        Ok((keyring, signing.len().max(1), api))
    }
}

fn modified(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|file| std::fs::metadata(file).and_then(|m| m.modified()).ok())
        .collect()
}

/// Reloads the keys on SIGHUP and when one of `watched` changes.
pub(crate) fn reload_keys_on_change(
    reloader: KeyReloader,
    argv: Vec<OsString>,
    generated: Generated,
    watched: Vec<PathBuf>,
) {
    tokio::spawn(async move {
        let mut hangups = hangups();
        let mut last = modified(&watched);
        let mut poll = tokio::time::interval(WATCH_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let trigger = tokio::select! {
                Some(()) = next_hangup(&mut hangups) => "SIGHUP",
                _ = poll.tick(), if !watched.is_empty() => {
                    let now = modified(&watched);
                    if now == last {
                        continue;
                    }
                    last = now;
                    "a changed file"
                }
            };
            let reloaded = config::reload_keys(argv.clone())
                .and_then(|(signing, api)| generated.fill_in(signing, api));
            match reloaded {
                Ok((keyring, signing_keys, api)) => {
                    let api_keys = api.len();
                    reloader.reload(keyring, api);
                    tracing::info!(trigger, signing_keys, api_keys, "keys reloaded");
                }
                Err(error) => {
                    tracing::error!(trigger, %error, "key reload failed: the keys in force stay");
                }
            }
        }
    });
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

fn hangups() -> Hangups {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(hangups) => Some(hangups),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP: keys reload when files change");
                None
            }
        }
    }
    #[cfg(not(unix))]
    None
}

/// The next SIGHUP; never, without them.
async fn next_hangup(hangups: &mut Hangups) -> Option<()> {
    #[cfg(unix)]
    if let Some(hangups) = hangups {
        return hangups.recv().await;
    }
    let _ = hangups;
    std::future::pending().await
}
