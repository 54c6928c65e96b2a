//! Reload of the web configuration when its files change, so rotated
//! certificates, new passwords and new headers take effect without a restart.
//!
//! Place in the data flow: beside the web server, at the very end. The server
//! asks for the current configuration on each new connection and each
//! request; at most once a second that look-up compares the stamps (size,
//! modification time, inode) of the web config file and of every certificate,
//! key and CA file it names with the ones seen when they were read, and
//! reloads when one differs. A new file that does not load keeps the last
//! valid configuration in service and is logged once (until its error
//! changes); it is retried on later checks, so the fix is picked up.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::config::{WebConfig, load_web_config};

/// How often the files are looked at, at most.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    /// No file changed.
    Unchanged,
    /// A new configuration is in service.
    Reloaded,
    /// The files changed but do not load; the last valid configuration stays.
    Kept(String),
}

#[derive(Debug)]
struct State {
    last_check: Instant,
    /// The error of the last failed reload, already logged.
    failing: Option<String>,
}

/// The web configuration in service, reloaded when its files change.
#[derive(Debug)]
pub(crate) struct Watcher {
    path: PathBuf,
    interval: Duration,
    current: RwLock<Arc<WebConfig>>,
    state: Mutex<State>,
}

impl Watcher {
    /// Serves `initial`, read from `path`, looking at the files every
    /// second at most.
    #[cfg(test)]
    pub(crate) fn new(path: PathBuf, initial: WebConfig) -> Self {
        Self::with_interval(path, initial, CHECK_INTERVAL)
    }

    pub(crate) fn with_interval(path: PathBuf, initial: WebConfig, interval: Duration) -> Self {
        Self {
            path,
            interval,
            current: RwLock::new(Arc::new(initial)),
            state: Mutex::new(State {
                last_check: Instant::now(),
                failing: None,
            }),
        }
    }

    fn snapshot(&self) -> Arc<WebConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The configuration to serve with, after looking at the files if the
    /// last look is older than the check interval. Never waits for another
    /// caller's check: while one runs, the others get the configuration in
    /// service.
    pub(crate) fn current(&self) -> Arc<WebConfig> {
        if let Ok(mut state) = self.state.try_lock()
            && state.last_check.elapsed() >= self.interval
        {
            self.check(&mut state);
        }
        self.snapshot()
    }

    /// Looks at the files now, whatever the interval.
    #[cfg(test)]
    pub(crate) fn check_now(&self) -> Check {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.check(&mut state)
    }

    fn check(&self, state: &mut State) -> Check {
        state.last_check = Instant::now();
        let current = self.snapshot();
        // While failing, retry on every check: the fix may be in a file the
        // broken configuration named but the one in service does not.
        if state.failing.is_none() && !current.changed_on_disk() {
            return Check::Unchanged;
        }
        let loaded = load_web_config(&self.path)
            .map_err(|e| e.to_string())
            .and_then(|new| {
                if new.tls_enabled() == current.tls_enabled() {
                    Ok(new)
                } else {
                    Err(format!(
                        "switching between TLS and plain HTTP needs a restart (TLS is {} now)",
                        if current.tls_enabled() { "on" } else { "off" }
                    ))
                }
            });
        match loaded {
            Ok(new) => {
                tracing::info!(
                    path = %self.path.display(),
                    tls = new.tls_enabled(),
                    client_auth = %new.client_auth(),
                    basic_auth_users = new.basic_auth_user_names().count(),
                    "web configuration reloaded"
                );
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(new);
                state.failing = None;
                Check::Reloaded
            }
            Err(error) => {
                if state.failing.as_deref() != Some(error.as_str()) {
                    tracing::warn!(
                        path = %self.path.display(),
                        %error,
                        "web configuration changed but is invalid; still serving with the last valid one"
                    );
                    state.failing = Some(error.clone());
                }
                Check::Kept(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn hash(password: &str) -> String {
        bcrypt::hash(password, 4).unwrap()
    }

    /// Replaces the file the way config management does: write aside, rename.
    fn replace(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    fn users_config(user: &str) -> String {
        format!("basic_auth_users:\n  {user}: {}\n", hash("pw"))
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("hss-swr-web-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reloads_a_changed_file_and_keeps_the_last_valid_one_on_error() {
        let dir = temp_dir("reload");
        let path = dir.join("web.yml");
        replace(&path, &users_config("alice"));
        let watcher = Watcher::new(path.clone(), load_web_config(&path).unwrap());
        assert_eq!(watcher.check_now(), Check::Unchanged);

        replace(&path, &users_config("bob"));
        assert_eq!(watcher.check_now(), Check::Reloaded);
        let names: Vec<String> = watcher
            .current()
            .basic_auth_user_names()
            .map(String::from)
            .collect();
        assert_eq!(names, ["bob"]);

        replace(&path, "basic_auth_users:\n  carol: not-a-hash\n");
        let Check::Kept(error) = watcher.check_now() else {
            panic!("an invalid file must not replace the configuration");
        };
        assert!(error.contains("basic_auth_users.carol"), "{error}");
        let names: Vec<String> = watcher
            .current()
            .basic_auth_user_names()
            .map(String::from)
            .collect();
        assert_eq!(names, ["bob"], "the last valid configuration stays");
        // Still broken: retried, still kept.
        assert!(matches!(watcher.check_now(), Check::Kept(_)));

        replace(&path, &users_config("dave"));
        assert_eq!(watcher.check_now(), Check::Reloaded);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_removed_file_keeps_the_configuration() {
        let dir = temp_dir("removed");
        let path = dir.join("web.yml");
        replace(&path, &users_config("alice"));
        let watcher = Watcher::new(path.clone(), load_web_config(&path).unwrap());
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(watcher.check_now(), Check::Kept(e) if e.contains("cannot read")));
        assert!(watcher.current().basic_auth_enabled());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn switching_to_tls_needs_a_restart() {
        let dir = temp_dir("mode");
        let path = dir.join("web.yml");
        replace(&path, &users_config("alice"));
        let watcher = Watcher::new(path.clone(), load_web_config(&path).unwrap());
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.join("server.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), cert.signing_key.serialize_pem()).unwrap();
        replace(
            &path,
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n",
        );
        assert!(matches!(watcher.check_now(), Check::Kept(e) if e.contains("needs a restart")));
        assert!(!watcher.current().tls_enabled());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn checks_wait_for_the_interval() {
        let dir = temp_dir("interval");
        let path = dir.join("web.yml");
        replace(&path, &users_config("alice"));
        let watcher = Watcher::with_interval(
            path.clone(),
            load_web_config(&path).unwrap(),
            Duration::from_secs(3600),
        );
        replace(&path, &users_config("bob"));
        // Within the interval the configuration in service is returned as is.
        assert!(watcher.current().basic_auth_user_names().eq(["alice"]));
        assert_eq!(watcher.check_now(), Check::Reloaded);
        assert!(watcher.current().basic_auth_user_names().eq(["bob"]));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
