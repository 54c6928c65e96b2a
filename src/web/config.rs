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

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::SystemTime;

use axum::http::{HeaderName, HeaderValue};
use rustls::crypto::{CryptoProvider, SupportedKxGroup, WebPkiSupportedAlgorithms, aws_lc_rs};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoClientAuth, WebPkiClientVerifier};
use rustls::{DistinguishedName, RootCertStore, ServerConfig, SupportedCipherSuite};
use serde::Deserialize;
use serde_yaml_ng::Value;

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
struct RawTls {
    #[serde(default)]
    cert: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    client_ca: Option<String>,
    #[serde(default)]
    cert_file: Option<String>,
    #[serde(default)]
    key_file: Option<String>,
    #[serde(default)]
    client_ca_file: Option<String>,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    cipher_suites: Option<Vec<String>>,
    #[serde(default)]
    curve_preferences: Option<Vec<String>>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
    #[serde(default)]
    prefer_server_cipher_suites: Option<bool>,
    #[serde(default)]
    client_allowed_sans: Option<Vec<String>>,
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

/// A PEM input: a file (`*_file`) or inline text, with the key to name in
/// errors.
struct Pem {
    key: &'static str,
    data: Vec<u8>,
}

impl Pem {
    /// Reads `file` (preferred) or takes `inline`; `None` if neither is set.
    fn load(
        sources: &mut Sources,
        dir: &Path,
        (file_key, file): (&'static str, Option<String>),
        (inline_key, inline): (&'static str, Option<String>),
    ) -> Result<Option<Self>, Error> {
        match (file, inline) {
            (Some(_), Some(_)) => Err(Error::invalid(
                format!("tls_server_config.{inline_key}"),
                format!("set only one of {file_key} and {inline_key}"),
            )),
            (Some(file), None) => {
                let path = resolve(dir, &file);
                let data = sources.read(&path).map_err(|e| {
                    Error::invalid(
                        format!("tls_server_config.{file_key}"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                Ok(Some(Self {
                    key: file_key,
                    data,
                }))
            }
            (None, Some(text)) => Ok(Some(Self {
                key: inline_key,
                data: text.into_bytes(),
            })),
            (None, None) => Ok(None),
        }
    }

    fn key_path(&self) -> String {
        format!("tls_server_config.{}", self.key)
    }

    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, Error> {
        let certs = CertificateDer::pem_slice_iter(&self.data)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::invalid(self.key_path(), format!("invalid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(Error::invalid(
                self.key_path(),
                "no PEM certificate (BEGIN CERTIFICATE) found",
            ));
        }
        Ok(certs)
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>, Error> {
        // The parser's messages can quote the input: keep them out.
        PrivateKeyDer::from_pem_slice(&self.data).map_err(|_| {
            Error::invalid(
                self.key_path(),
                "no PEM private key (PKCS#8, PKCS#1 or SEC1) found",
            )
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TlsVersion {
    Tls12,
    Tls13,
}

fn parse_version(key: &str, text: &str) -> Result<TlsVersion, Error> {
    match text {
        "TLS12" => Ok(TlsVersion::Tls12),
        "TLS13" => Ok(TlsVersion::Tls13),
        "TLS10" | "TLS11" => Err(Error::invalid(
            format!("tls_server_config.{key}"),
            format!("{text} is not supported: this exporter (rustls) speaks TLS12 and TLS13 only"),
        )),
        _ => Err(Error::invalid(
            format!("tls_server_config.{key}"),
            format!("unknown TLS version {text:?}; expected TLS12 or TLS13"),
        )),
    }
}

/// The TLS 1.2 suites rustls implements, by their Go names.
fn tls12_suite(name: &str) -> Option<SupportedCipherSuite> {
    use aws_lc_rs::cipher_suite as cs;
    Some(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => {
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        _ => return None,
    })
}

/// TLS 1.3 suite names: accepted and ignored, as Go does (TLS 1.3 suites are
/// not configurable).
const TLS13_SUITE_NAMES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

fn restrict_cipher_suites(provider: &mut CryptoProvider, names: &[String]) -> Result<(), Error> {
    let mut tls12 = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if TLS13_SUITE_NAMES.contains(&name.as_str()) {
            continue;
        }
        let suite = tls12_suite(name).ok_or_else(|| {
            Error::invalid(
                format!("tls_server_config.cipher_suites[{i}]"),
                format!(
                    "{name} is not supported by this exporter (rustls); supported: \
                     TLS_ECDHE_{{ECDSA,RSA}}_WITH_{{AES_128_GCM_SHA256,AES_256_GCM_SHA384,\
                     CHACHA20_POLY1305_SHA256}}"
                ),
            )
        })?;
        if !tls12.contains(&suite) {
            tls12.push(suite);
        }
    }
    let mut suites: Vec<SupportedCipherSuite> = provider
        .cipher_suites
        .iter()
        .copied()
        .filter(|s| s.tls13().is_some())
        .collect();
    suites.extend(tls12);
    provider.cipher_suites = suites;
    Ok(())
}

fn restrict_curves(provider: &mut CryptoProvider, names: &[String]) -> Result<(), Error> {
    use aws_lc_rs::kx_group as kx;
    let mut groups: Vec<&'static dyn SupportedKxGroup> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let group: &'static dyn SupportedKxGroup = match name.as_str() {
            "CurveP256" => kx::SECP256R1,
            "CurveP384" => kx::SECP384R1,
            "X25519" => kx::X25519,
            "X25519MLKEM768" => kx::X25519MLKEM768,
            _ => {
                return Err(Error::invalid(
                    format!("tls_server_config.curve_preferences[{i}]"),
                    format!(
                        "{name} is not supported by this exporter (rustls); supported: \
                         X25519, CurveP256, CurveP384, X25519MLKEM768"
                    ),
                ));
            }
        };
        if !groups.iter().any(|g| g.name() == group.name()) {
            groups.push(group);
        }
    }
    if !groups.is_empty() {
        provider.kx_groups = groups;
    }
    Ok(())
}

impl RawTls {
    /// Whether any setting that turns TLS on is present (exporter-toolkit's
    /// rule: otherwise the section is ignored and the server speaks plain
    /// HTTP).
    fn enabled(&self) -> bool {
        [
            &self.cert,
            &self.key,
            &self.client_ca,
            &self.cert_file,
            &self.key_file,
            &self.client_ca_file,
            &self.client_auth_type,
        ]
        .iter()
        .any(|v| v.as_deref().is_some_and(|v| !v.is_empty()))
    }

    fn build(
        self,
        dir: &Path,
        sources: &mut Sources,
        http2: bool,
    ) -> Result<(Option<Arc<ServerConfig>>, ClientAuth), Error> {
        if !self.enabled() {
            return Ok((None, ClientAuth::NoClientCert));
        }
        if self.client_allowed_sans.is_some() {
            return Err(Error::invalid(
                "tls_server_config.client_allowed_sans",
                "not supported by this exporter; give the allowed clients their own CA \
                 (client_ca_file) with RequireAndVerifyClientCert",
            ));
        }
        let min = match nonempty(self.min_version) {
            Some(v) => parse_version("min_version", &v)?,
            None => TlsVersion::Tls12,
        };
        let max = match nonempty(self.max_version) {
            Some(v) => parse_version("max_version", &v)?,
            None => TlsVersion::Tls13,
        };
        if min > max {
            return Err(Error::invalid(
                "tls_server_config.min_version",
                "is above max_version",
            ));
        }
        let client_auth = {
            let text = self.client_auth_type.unwrap_or_default();
            ClientAuth::parse(&text).ok_or_else(|| {
                Error::invalid(
                    "tls_server_config.client_auth_type",
                    format!(
                        "unknown value {text:?}; expected one of {}",
                        ClientAuth::NAMES
                    ),
                )
            })?
        };

        let cert = Pem::load(
            sources,
            dir,
            ("cert_file", nonempty(self.cert_file)),
            ("cert", nonempty(self.cert)),
        )?
        .ok_or_else(|| {
            Error::invalid(
                "tls_server_config.cert_file",
                "missing (set cert_file or cert)",
            )
        })?;
        let key = Pem::load(
            sources,
            dir,
            ("key_file", nonempty(self.key_file)),
            ("key", nonempty(self.key)),
        )?
        .ok_or_else(|| {
            Error::invalid(
                "tls_server_config.key_file",
                "missing (set key_file or key)",
            )
        })?;
        let ca = Pem::load(
            sources,
            dir,
            ("client_ca_file", nonempty(self.client_ca_file)),
            ("client_ca", nonempty(self.client_ca)),
        )?;
        let chain = cert.certificates()?;
        let private_key = key.private_key()?;

        let roots = match &ca {
            Some(ca) => {
                if client_auth == ClientAuth::NoClientCert {
                    return Err(Error::invalid(
                        ca.key_path(),
                        "client CAs are set but client_auth_type is NoClientCert; \
                         set client_auth_type (RequireAndVerifyClientCert for mutual TLS)",
                    ));
                }
                let mut roots = RootCertStore::empty();
                for cert in ca.certificates()? {
                    roots.add(cert).map_err(|e| {
                        Error::invalid(ca.key_path(), format!("not a usable CA certificate: {e}"))
                    })?;
                }
                Some(roots)
            }
            None if client_auth.verifies() => {
                return Err(Error::invalid(
                    "tls_server_config.client_ca_file",
                    format!(
                        "missing: client_auth_type {client_auth} verifies client certificates against it"
                    ),
                ));
            }
            None => None,
        };

        let mut provider = aws_lc_rs::default_provider();
        if let Some(names) = &self.cipher_suites {
            restrict_cipher_suites(&mut provider, names)?;
        }
        if let Some(names) = &self.curve_preferences {
            restrict_curves(&mut provider, names)?;
        }
        let provider = Arc::new(provider);

        let verifier: Arc<dyn ClientCertVerifier> = match (client_auth, roots) {
            (ClientAuth::NoClientCert, _) => Arc::new(NoClientAuth),
            (ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert, roots) => {
                Arc::new(AnyClientCert {
                    mandatory: client_auth == ClientAuth::RequireAnyClientCert,
                    hints: roots.map(|r| r.subjects()).unwrap_or_default(),
                    algorithms: provider.signature_verification_algorithms,
                })
            }
            (
                ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert,
                roots,
            ) => {
                let roots = roots.unwrap_or_else(RootCertStore::empty);
                let builder = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                );
                let builder = if client_auth == ClientAuth::VerifyClientCertIfGiven {
                    builder.allow_unauthenticated()
                } else {
                    builder
                };
                builder.build().map_err(|e| {
                    Error::invalid("tls_server_config.client_ca_file", e.to_string())
                })?
            }
        };

        let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
            (TlsVersion::Tls12, &rustls::version::TLS12),
            (TlsVersion::Tls13, &rustls::version::TLS13),
        ]
        .into_iter()
        .filter(|(v, _)| (min..=max).contains(v))
        .map(|(_, v)| v)
        .collect();
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| {
                Error::invalid(
                    "tls_server_config.cipher_suites",
                    format!("no usable cipher suite for the TLS versions allowed: {e}"),
                )
            })?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, private_key)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => Error::invalid(
                    key.key_path(),
                    format!("is not the key of the certificate in {}", cert.key),
                ),
                e => Error::invalid(key.key_path(), e.to_string()),
            })?;
        config.ignore_client_order = self.prefer_server_cipher_suites.unwrap_or(true);
        config.alpn_protocols = if http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok((Some(Arc::new(config)), client_auth))
    }
}

/// `RequestClientCert` and `RequireAnyClientCert`: any certificate is
/// accepted (as Go's crypto/tls does), but the client must still prove it
/// holds the certificate's key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("hss-swr-web-config-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }

        /// A self-signed certificate and its key, as `name.pem` and `name.key`.
        fn cert(&self, name: &str) {
            let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
            self.write(&format!("{name}.pem"), &cert.cert.pem());
            self.write(&format!("{name}.key"), &cert.signing_key.serialize_pem());
        }

        fn load(&self, yaml: &str) -> Result<WebConfig, Error> {
            load_web_config(&self.write("web.yml", yaml))
        }

        /// The one-line message of a refused configuration.
        fn refused(&self, yaml: &str) -> String {
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

    const HASH: &str = "$2y$04$4C1Kv7Y4.XvA9dOkIm3Ev.sxY1Xx9r8b0i8b0S0Xl6G1rSyCk7xG2";

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

    #[test]
    fn tls_loads_with_relative_paths() {
        let dir = Dir::new("tls");
        dir.cert("server");
        let config = dir
            .load("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n")
            .unwrap();
        assert!(config.tls_enabled());
        assert_eq!(config.client_auth(), ClientAuth::NoClientCert);
        let tls = config.tls_server_config().unwrap();
        assert_eq!(tls.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        // The config file and both PEM files are watched.
        assert_eq!(config.sources.len(), 3);
        assert!(!config.changed_on_disk());

        let config = dir
            .load(
                "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  \
                 min_version: TLS13\n  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n  \
                 curve_preferences: [X25519, CurveP256]\n  prefer_server_cipher_suites: false\n\
                 http_server_config:\n  http2: false\n",
            )
            .unwrap();
        let tls = config.tls_server_config().unwrap();
        assert_eq!(tls.alpn_protocols, [b"http/1.1".to_vec()]);
        assert!(!tls.ignore_client_order);

        // Inline PEM works too.
        let cert = std::fs::read_to_string(dir.0.join("server.pem")).unwrap();
        let key = std::fs::read_to_string(dir.0.join("server.key")).unwrap();
        let yaml = serde_yaml_ng::to_string(&serde_json::json!({
            "tls_server_config": {"cert": cert, "key": key}
        }))
        .unwrap();
        assert!(dir.load(&yaml).unwrap().tls_enabled());
    }

    #[test]
    fn a_tls_section_without_tls_settings_means_plain_http() {
        let dir = Dir::new("notls");
        let config = dir
            .load("tls_server_config:\n  min_version: TLS13\n")
            .unwrap();
        assert!(!config.tls_enabled());
    }

    #[test]
    fn tls_errors_name_the_key() {
        let dir = Dir::new("tlserr");
        dir.cert("server");
        dir.cert("other");
        dir.write("empty.pem", "");
        let base = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n";
        let cases: &[(&str, &str)] = &[
            (
                "tls_server_config:\n  key_file: server.key\n",
                "tls_server_config.cert_file: missing",
            ),
            (
                "tls_server_config:\n  cert_file: server.pem\n",
                "tls_server_config.key_file: missing",
            ),
            (
                "tls_server_config:\n  cert_file: nope.pem\n  key_file: server.key\n",
                "tls_server_config.cert_file: cannot read ",
            ),
            (
                "tls_server_config:\n  cert_file: empty.pem\n  key_file: server.key\n",
                "tls_server_config.cert_file: no PEM certificate",
            ),
            (
                "tls_server_config:\n  cert_file: server.pem\n  key_file: server.pem\n",
                "tls_server_config.key_file: no PEM private key",
            ),
            (
                "tls_server_config:\n  cert_file: server.pem\n  key_file: other.key\n",
                "tls_server_config.key_file: is not the key of the certificate in cert_file",
            ),
            (
                "  client_auth_type: RequireAndVerifyClientCert\n",
                "tls_server_config.client_ca_file: missing",
            ),
            (
                "  client_auth_type: VerifyClientCertIfGiven\n",
                "tls_server_config.client_ca_file: missing",
            ),
            (
                "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n",
                "tls_server_config.client_ca_file: cannot read ",
            ),
            (
                "  client_ca_file: other.pem\n",
                "tls_server_config.client_ca_file: client CAs are set but client_auth_type is NoClientCert",
            ),
            (
                "  client_auth_type: Sometimes\n",
                "tls_server_config.client_auth_type: unknown value \"Sometimes\"",
            ),
            (
                "  min_version: TLS10\n",
                "tls_server_config.min_version: TLS10 is not supported",
            ),
            (
                "  min_version: TLS13\n  max_version: TLS12\n",
                "tls_server_config.min_version: is above max_version",
            ),
            (
                "  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n",
                "tls_server_config.cipher_suites[0]: TLS_RSA_WITH_AES_128_CBC_SHA is not supported",
            ),
            (
                "  curve_preferences: [X25519, CurveP521]\n",
                "tls_server_config.curve_preferences[1]: CurveP521 is not supported",
            ),
            (
                "  client_allowed_sans: [client.example]\n",
                "tls_server_config.client_allowed_sans: not supported",
            ),
            (
                "  cert: inline\n",
                "tls_server_config.cert: set only one of cert_file and cert",
            ),
        ];
        for (yaml, expected) in cases {
            let yaml = if yaml.starts_with("  ") {
                format!("{base}{yaml}")
            } else {
                (*yaml).to_string()
            };
            let error = dir.refused(&yaml);
            assert!(error.starts_with(expected), "{error}\nexpected: {expected}");
        }
        // Every CA must be a certificate.
        let error = dir.refused(&format!(
            "{base}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: empty.pem\n"
        ));
        assert!(
            error.starts_with("tls_server_config.client_ca_file: no PEM certificate"),
            "{error}"
        );
    }

    #[test]
    fn client_auth_types_load() {
        let dir = Dir::new("clientauth");
        dir.cert("server");
        dir.cert("ca");
        for (name, expected) in [
            ("RequestClientCert", ClientAuth::RequestClientCert),
            ("RequireAnyClientCert", ClientAuth::RequireAnyClientCert),
            ("RequireClientCert", ClientAuth::RequireAnyClientCert),
            (
                "VerifyClientCertIfGiven",
                ClientAuth::VerifyClientCertIfGiven,
            ),
            (
                "RequireAndVerifyClientCert",
                ClientAuth::RequireAndVerifyClientCert,
            ),
        ] {
            let config = dir
                .load(&format!(
                    "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  \
                     client_auth_type: {name}\n  client_ca_file: ca.pem\n"
                ))
                .unwrap();
            assert_eq!(config.client_auth(), expected);
        }
    }
}
