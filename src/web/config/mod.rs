//! The web configuration (`--web.config.file`): the Prometheus
//! exporter-toolkit format, read into what the server needs to serve TLS,
//! check basic-auth credentials and add response headers.
//!
//! Place in the data flow: beside the web server, at the very end. It reads
//! only its own file and the certificate files that file names; it never sees
//! the exporter's configuration, the HSS API or the metrics. The file is read
//! into a loose raw form (unknown keys refused), then checked and turned into
//! a [`WebConfig`]: certificates and keys are loaded and a rustls server
//! configuration is built, so a file that loads here is one the server can
//! serve with. Every error names the key (`tls_server_config.client_ca_file`)
//! and the reason on one line, and never shows a key, a password or a hash.
//! The `tls_server_config` section, from its raw form to the rustls server
//! configuration, is in `tls.rs`; this file holds the rest of the schema,
//! the checks, and the loaded [`WebConfig`] the server reads.

mod tls;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::SystemTime;

use axum::http::{HeaderName, HeaderValue};
use rustls::ServerConfig;
use serde::Deserialize;
use serde_yaml_ng::Value;

use tls::RawTls;

/// The web configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read web config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("web config file {path} is not valid YAML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key is unknown, has a wrong type, or its value is refused.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key path, e.g. `tls_server_config.client_ca_file`.
        key: String,
        /// Why it was refused.
        reason: String,
    },
}

impl Error {
    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// How the server asks for and checks client certificates
/// (`tls_server_config.client_auth_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `NoClientCert` (the default): no client certificate is asked for.
    NoClientCert,
    /// `RequestClientCert`: asked for, not required, not verified.
    RequestClientCert,
    /// `RequireAnyClientCert` (or the old `RequireClientCert`): required, not
    /// verified against a CA.
    RequireAnyClientCert,
    /// `VerifyClientCertIfGiven`: not required; verified against
    /// `client_ca_file` when given.
    VerifyClientCertIfGiven,
    /// `RequireAndVerifyClientCert`: required and verified against
    /// `client_ca_file` (mutual TLS).
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    const NAMES: &'static str = "NoClientCert, RequestClientCert, RequireAnyClientCert, \
                                 VerifyClientCertIfGiven, RequireAndVerifyClientCert";

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "" | "NoClientCert" => Self::NoClientCert,
            "RequestClientCert" => Self::RequestClientCert,
            "RequireAnyClientCert" | "RequireClientCert" => Self::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => Self::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => Self::RequireAndVerifyClientCert,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::NoClientCert => "NoClientCert",
            Self::RequestClientCert => "RequestClientCert",
            Self::RequireAnyClientCert => "RequireAnyClientCert",
            Self::VerifyClientCertIfGiven => "VerifyClientCertIfGiven",
            Self::RequireAndVerifyClientCert => "RequireAndVerifyClientCert",
        }
    }

    fn verifies(self) -> bool {
        matches!(
            self,
            Self::VerifyClientCertIfGiven | Self::RequireAndVerifyClientCert
        )
    }
}

impl fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a file was last seen: enough to notice a rewrite, a replacement
/// (rename over it, a Kubernetes secret update) or a removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    device: u64,
    #[cfg(unix)]
    inode: u64,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt as _;
        Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            device: meta.dev(),
            #[cfg(unix)]
            inode: meta.ino(),
        }
    }

    /// The stamp of `path` now, or `None` when it cannot be read.
    fn of_path(path: &Path) -> Option<Self> {
        std::fs::metadata(path).ok().map(|meta| Self::of(&meta))
    }
}

/// A file the configuration was built from, and how it looked when read.
#[derive(Debug, Clone)]
struct Source {
    path: PathBuf,
    stamp: FileStamp,
}

/// Reads files and remembers each one's stamp, taken from the open handle so
/// it describes the content that was read.
#[derive(Debug, Default)]
struct Sources(Vec<Source>);

impl Sources {
    fn read(&mut self, path: &Path) -> std::io::Result<Vec<u8>> {
        let mut file = File::open(path)?;
        let stamp = FileStamp::of(&file.metadata()?);
        let mut content = Vec::new();
        file.read_to_end(&mut content)?;
        self.0.push(Source {
            path: path.to_path_buf(),
            stamp,
        });
        Ok(content)
    }
}

/// A loaded, checked web configuration: what the server serves with.
#[derive(Clone)]
pub struct WebConfig {
    tls: Option<Arc<ServerConfig>>,
    client_auth: ClientAuth,
    http2: bool,
    headers: Vec<(HeaderName, HeaderValue)>,
    users: Arc<BTreeMap<String, String>>,
    sources: Vec<Source>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The user names only: the hashes stay out of logs.
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("client_auth", &self.client_auth)
            .field("http2", &self.http2)
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<_>>(),
            )
            .field("basic_auth_users", &self.users.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl WebConfig {
    /// Whether the server speaks TLS (a certificate is configured).
    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    /// How client certificates are asked for and checked.
    pub fn client_auth(&self) -> ClientAuth {
        self.client_auth
    }

    /// Whether HTTP/2 is offered (through ALPN, so only with TLS).
    pub fn http2(&self) -> bool {
        self.http2
    }

    /// Whether requests need basic-auth credentials.
    pub fn basic_auth_enabled(&self) -> bool {
        !self.users.is_empty()
    }

    /// The names of the basic-auth users, sorted.
    pub fn basic_auth_user_names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    pub(crate) fn tls_server_config(&self) -> Option<Arc<ServerConfig>> {
        self.tls.clone()
    }

    pub(crate) fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    pub(crate) fn users(&self) -> &BTreeMap<String, String> {
        &self.users
    }

    /// Whether any file this configuration was built from changed (or
    /// disappeared) since it was read.
    pub(crate) fn changed_on_disk(&self) -> bool {
        self.sources
            .iter()
            .any(|source| FileStamp::of_path(&source.path) != Some(source.stamp))
    }
}

/// Reads and checks the web configuration at `path`, loading the
/// certificates and keys it names (relative paths resolve against the
/// file's directory). Refuses unknown keys, settings rustls cannot honour,
/// and anything the server could not serve with.
pub fn load_web_config(path: &Path) -> Result<WebConfig, Error> {
    let mut sources = Sources::default();
    let content = sources.read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(content).map_err(|_| Error::Syntax {
        path: path.to_path_buf(),
        message: "the file is not UTF-8 text".into(),
    })?;
    let value: Value = serde_yaml_ng::from_str(&text).map_err(|e| Error::Syntax {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    // An empty file is valid, as with exporter-toolkit: plain HTTP, no auth.
    let raw: RawWebConfig = if value.is_null() {
        RawWebConfig::default()
    } else {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let reason = e.inner().to_string();
            Error::invalid(if key == "." { "web config".into() } else { key }, reason)
        })?
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    raw.build(dir, sources)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    http_server_config: Option<RawHttp>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
    #[serde(default)]
    rate_limit: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default)]
    http2: Option<bool>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
}

/// The response headers exporter-toolkit lets a web config set, each with
/// the values it allows (empty: any value).
const ALLOWED_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

fn nonempty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

impl RawWebConfig {
    fn build(self, dir: &Path, mut sources: Sources) -> Result<WebConfig, Error> {
        if self.rate_limit.is_some() {
            return Err(Error::invalid(
                "rate_limit",
                "not supported by this exporter; rate-limit in a reverse proxy instead",
            ));
        }
        let http = self.http_server_config.unwrap_or_default();
        let http2 = http.http2.unwrap_or(true);
        let headers = build_headers(http.headers.unwrap_or_default())?;
        let users = self.basic_auth_users.unwrap_or_default();
        check_users(&users)?;
        let (tls, client_auth) = match self.tls_server_config {
            Some(raw) => raw.build(dir, &mut sources, http2)?,
            None => (None, ClientAuth::NoClientCert),
        };
        Ok(WebConfig {
            tls,
            client_auth,
            http2,
            headers,
            users: Arc::new(users),
            sources: sources.0,
        })
    }
}

fn build_headers(raw: BTreeMap<String, String>) -> Result<Vec<(HeaderName, HeaderValue)>, Error> {
    let mut headers = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let key = format!("http_server_config.headers.{name}");
        let Some((canonical, allowed)) = ALLOWED_HEADERS
            .iter()
            .find(|(allowed, _)| allowed.eq_ignore_ascii_case(&name))
        else {
            let names: Vec<&str> = ALLOWED_HEADERS.iter().map(|(n, _)| *n).collect();
            return Err(Error::invalid(
                key,
                format!("this header cannot be set; allowed: {}", names.join(", ")),
            ));
        };
        if !allowed.is_empty() && !allowed.iter().any(|a| a.eq_ignore_ascii_case(&value)) {
            return Err(Error::invalid(
                key,
                format!(
                    "{value:?} is not allowed; expected one of: {}",
                    allowed.join(", ")
                ),
            ));
        }
        let value = HeaderValue::from_str(&value)
            .map_err(|_| Error::invalid(&key, "not a valid header value"))?;
        let name = HeaderName::from_bytes(canonical.as_bytes())
            .map_err(|_| Error::invalid(&key, "not a valid header name"))?;
        headers.push((name, value));
    }
    Ok(headers)
}

fn check_users(users: &BTreeMap<String, String>) -> Result<(), Error> {
    for (user, hash) in users {
        let key = format!("basic_auth_users.{user}");
        if user.contains(':') {
            return Err(Error::invalid(
                key,
                "a user name cannot contain ':' (basic auth splits on it)",
            ));
        }
        match bcrypt::HashParts::from_str(hash) {
            Ok(parts) if (4..=31).contains(&parts.get_cost()) => {}
            Ok(parts) => {
                return Err(Error::invalid(
                    key,
                    format!("bcrypt cost {} is outside 4..31", parts.get_cost()),
                ));
            }
            Err(_) => {
                return Err(Error::invalid(
                    key,
                    "not a bcrypt hash (60 characters starting $2y$, $2b$ or $2a$); \
                     make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n'",
                ));
            }
        }
    }
    Ok(())
}

fn resolve(dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    }
}

#[cfg(test)]
mod tests {
    //! The helpers here serve the tests of `tls.rs` too.

    use super::*;

    pub(super) struct Dir(pub(super) PathBuf);

    impl Dir {
        pub(super) fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("hss-swr-web-config-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        pub(super) fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }

        /// A self-signed certificate and its key, as `name.pem` and `name.key`.
        pub(super) fn cert(&self, name: &str) {
            let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
            self.write(&format!("{name}.pem"), &cert.cert.pem());
            self.write(&format!("{name}.key"), &cert.signing_key.serialize_pem());
        }

        pub(super) fn load(&self, yaml: &str) -> Result<WebConfig, Error> {
            load_web_config(&self.write("web.yml", yaml))
        }

        /// The one-line message of a refused configuration.
        pub(super) fn refused(&self, yaml: &str) -> String {
            match self.load(yaml) {
                Ok(config) => panic!("accepted: {config:?}\n{yaml}"),
                Err(error) => {
                    let text = error.to_string();
                    assert!(!text.contains('\n'), "one line: {text}");
                    text
                }
            }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub(super) const HASH: &str = "$2y$04$4C1Kv7Y4.XvA9dOkIm3Ev.sxY1Xx9r8b0i8b0S0Xl6G1rSyCk7xG2";

    #[test]
    fn an_empty_file_is_plain_http_without_auth() {
        let dir = Dir::new("empty");
        let config = dir.load("").unwrap();
        assert!(!config.tls_enabled());
        assert!(!config.basic_auth_enabled());
        let config = dir.load("# nothing\n").unwrap();
        assert!(!config.tls_enabled());
    }

    #[test]
    fn users_headers_and_defaults() {
        let dir = Dir::new("users");
        let config = dir
            .load(&format!(
                "basic_auth_users:\n  prometheus: {HASH}\nhttp_server_config:\n  headers:\n    \
                 X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n"
            ))
            .unwrap();
        assert!(config.basic_auth_enabled());
        assert!(config.basic_auth_user_names().eq(["prometheus"]));
        assert!(config.http2(), "http2 defaults to true");
        let names: Vec<&str> = config.headers().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["strict-transport-security", "x-frame-options"]);
        // The hash stays out of Debug output.
        assert!(!format!("{config:?}").contains(HASH));
    }

    #[test]
    fn unknown_keys_are_refused_with_their_path() {
        let dir = Dir::new("unknown");
        let error = dir.refused("basic_auth_user: {}\n");
        assert!(error.contains("basic_auth_user"), "{error}");
        let error = dir.refused("tls_server_config:\n  cert_fil: x.pem\n");
        assert!(error.starts_with("tls_server_config"), "{error}");
        assert!(error.contains("cert_fil"), "{error}");
        let error = dir.refused("http_server_config:\n  http2: maybe\n");
        assert!(error.starts_with("http_server_config.http2"), "{error}");
        let error = dir.refused("rate_limit:\n  burst: 1\n");
        assert!(error.starts_with("rate_limit: not supported"), "{error}");
    }

    #[test]
    fn headers_outside_the_toolkit_list_are_refused() {
        let dir = Dir::new("headers");
        let error = dir.refused("http_server_config:\n  headers:\n    Content-Type: foo\n");
        assert!(
            error.starts_with("http_server_config.headers.Content-Type: this header cannot be set"),
            "{error}"
        );
        let error = dir.refused("http_server_config:\n  headers:\n    X-Frame-Options: allow\n");
        assert!(
            error.starts_with("http_server_config.headers.X-Frame-Options"),
            "{error}"
        );
        let error =
            dir.refused("http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n");
        assert!(error.contains("nosniff"), "{error}");
    }

    #[test]
    fn bad_hashes_are_refused_without_showing_them() {
        let dir = Dir::new("hashes");
        let error = dir.refused("basic_auth_users:\n  prometheus: secret-in-clear\n");
        assert!(
            error.starts_with("basic_auth_users.prometheus: not a bcrypt hash"),
            "{error}"
        );
        assert!(!error.contains("secret-in-clear"), "{error}");
        let error = dir.refused(&format!("basic_auth_users:\n  'a:b': {HASH}\n"));
        assert!(error.starts_with("basic_auth_users.a:b"), "{error}");
    }
}
