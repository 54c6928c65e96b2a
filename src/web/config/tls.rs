//! The `tls_server_config` section of the web configuration: its raw form,
//! the certificate, key and client-CA inputs, and the rustls server
//! configuration they are built into.
//!
//! Place in the data flow: inside the web configuration, at the very end of
//! the flow. When the section turns TLS on (exporter-toolkit's rule), the
//! PEM files or inline PEM are read (each file's stamp recorded, so that the
//! watcher notices a rotation), versions, cipher suites and curves are
//! restricted as asked, the client-certificate verifier matching
//! `client_auth_type` is chosen, and a `ServerConfig` is built, so a section
//! that loads here is one the server can serve with. Errors name the key
//! under `tls_server_config` and never show a key.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::{CryptoProvider, SupportedKxGroup, WebPkiSupportedAlgorithms, aws_lc_rs};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoClientAuth, WebPkiClientVerifier};
use rustls::{DistinguishedName, RootCertStore, ServerConfig, SupportedCipherSuite};
use serde::Deserialize;

use super::{ClientAuth, Error, Sources, nonempty, resolve};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
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

    pub(super) fn build(
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
    use super::super::tests::Dir;
    use super::*;

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
