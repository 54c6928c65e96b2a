//! `--web.config.file`: TLS, mutual TLS, basic auth and response headers as a
//! client sees them, with certificates made in the test, and reload of the
//! file and of the certificates while the server runs.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use hss_swr_exporter::web;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use reqwest::{Certificate, Client, Identity, StatusCode, Version};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

// ---------------------------------------------------------------------------
// Certificates

/// A certificate authority that signs server and client certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl Leaf {
    fn identity(&self) -> Identity {
        Identity::from_pem(format!("{}{}", self.cert, self.key).as_bytes()).unwrap()
    }
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn certificate(&self) -> Certificate {
        Certificate::from_pem(self.pem().as_bytes()).unwrap()
    }

    fn sign(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "hss-swr-exporter test");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn server(&self) -> Leaf {
        self.sign(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn client(&self) -> Leaf {
        self.sign(&["prometheus"], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

// ---------------------------------------------------------------------------
// Files

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "hss-swr-web-config-it-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Replaces a file the way config management and Kubernetes do: write
    /// aside, then rename over it.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        let tmp = self.path(&format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    fn server_files(&self, leaf: &Leaf) {
        self.write("server.pem", &leaf.cert);
        self.write("server.key", &leaf.key);
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const TLS: &str = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n";

fn hash(password: &str) -> String {
    // Cost 4 keeps the test fast; the format is the same as cost 10.
    bcrypt::hash(password, 4).unwrap()
}

// ---------------------------------------------------------------------------
// Server and clients

/// An exporter-like router: what the server protects.
fn router() -> Router {
    Router::new()
        .route("/", get(|| async { "landing\n" }))
        .route("/metrics", get(|| async { "hss_swr_up 1\n" }))
}

struct Server {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), web::Error>>,
}

impl Server {
    /// A server that looks at its web configuration every 50 ms (the
    /// daemon: every second), so rewritten files apply within the test's
    /// first few polls.
    async fn start(web_config: &Path) -> Self {
        Self::start_with_limits(web_config, web::ServerLimits::default()).await
    }

    async fn start_with_limits(web_config: &Path, limits: web::ServerLimits) -> Self {
        let limits = web::ServerLimits {
            web_config_check_interval: Duration::from_millis(50),
            ..limits
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(web::serve_with_limits(
            listener,
            router(),
            Some(web_config.to_path_buf()),
            limits,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            address,
            stop: Some(stop),
            task,
        }
    }

    fn https(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.address.port())
    }

    fn http(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.address.port())
    }

    /// A client that trusts `ca` and reaches this server as `localhost`,
    /// with a fresh connection pool (so each client opens a new connection).
    fn client(&self, ca: &Ca, identity: Option<&Leaf>) -> Client {
        let mut builder = Client::builder()
            .tls_certs_only([ca.certificate()])
            .resolve("localhost", self.address)
            .timeout(Duration::from_secs(10));
        if let Some(leaf) = identity {
            builder = builder.identity(leaf.identity());
        }
        builder.build().unwrap()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = (&mut self.task).await.unwrap();
        assert!(result.is_ok(), "{result:?}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until `check` holds, retrying; fails after a generous deadline.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "never observed: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status(client: &Client, url: &str) -> Option<StatusCode> {
    client.get(url).send().await.ok().map(|r| r.status())
}

// ---------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn tls_serves_the_routes_and_refuses_plain_http_and_untrusting_clients() {
    let dir = Dir::new("tls");
    let ca = Ca::new("test CA");
    dir.server_files(&ca.server());
    let server = Server::start(&dir.write("web.yml", TLS)).await;

    let response = server
        .client(&ca, None)
        .get(server.https("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.version(),
        Version::HTTP_2,
        "h2 through ALPN by default"
    );
    assert_eq!(response.text().await.unwrap(), "hss_swr_up 1\n");
    let response = server
        .client(&ca, None)
        .get(server.https("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "landing\n");

    // Plain HTTP gets no answer, and a client that does not trust the CA
    // refuses the server.
    assert!(
        Client::new()
            .get(server.http("/metrics"))
            .send()
            .await
            .is_err()
    );
    let other = Ca::new("other CA");
    assert!(
        server
            .client(&other, None)
            .get(server.https("/metrics"))
            .send()
            .await
            .is_err()
    );

    server.stop().await;
}

#[tokio::test]
async fn http2_false_serves_http1_only() {
    let dir = Dir::new("http1");
    let ca = Ca::new("test CA");
    dir.server_files(&ca.server());
    let server = Server::start(&dir.write(
        "web.yml",
        &format!("{TLS}http_server_config:\n  http2: false\n"),
    ))
    .await;
    let response = server
        .client(&ca, None)
        .get(server.https("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_11);
    server.stop().await;
}

#[tokio::test]
async fn tls12_only_and_tls13_only_servers_work() {
    for (versions, min) in [
        ("  max_version: TLS12\n", "TLS12"),
        ("  min_version: TLS13\n", "TLS13"),
    ] {
        let dir = Dir::new(&format!("versions-{min}"));
        let ca = Ca::new("test CA");
        dir.server_files(&ca.server());
        let server = Server::start(&dir.write("web.yml", &format!("{TLS}{versions}"))).await;
        let response = server
            .client(&ca, None)
            .get(server.https("/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{versions}");
        // A client limited to the other version cannot connect.
        let other = if min == "TLS12" {
            reqwest::tls::Version::TLS_1_3
        } else {
            reqwest::tls::Version::TLS_1_2
        };
        let limited = Client::builder()
            .tls_certs_only([ca.certificate()])
            .resolve("localhost", server.address)
            .tls_version_min(other)
            .tls_version_max(other)
            .build()
            .unwrap();
        assert!(
            limited.get(server.https("/metrics")).send().await.is_err(),
            "{versions}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate_signed_by_the_client_ca() {
    let dir = Dir::new("mtls");
    let ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let rogue_ca = Ca::new("rogue CA");
    dir.server_files(&ca.server());
    dir.write("client-ca.pem", &client_ca.pem());
    let server = Server::start(&dir.write(
        "web.yml",
        &format!(
            "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.pem\n"
        ),
    ))
    .await;
    let url = server.https("/metrics");

    assert_eq!(
        status(&server.client(&ca, None), &url).await,
        None,
        "no certificate"
    );
    let rogue = rogue_ca.client();
    assert_eq!(
        status(&server.client(&ca, Some(&rogue)), &url).await,
        None,
        "a certificate from another CA"
    );
    // A self-signed certificate is refused too.
    let self_signed = rcgen::generate_simple_self_signed(vec!["prometheus".to_string()]).unwrap();
    let self_signed = Leaf {
        cert: self_signed.cert.pem(),
        key: self_signed.signing_key.serialize_pem(),
    };
    assert_eq!(
        status(&server.client(&ca, Some(&self_signed)), &url).await,
        None
    );

    let signed = client_ca.client();
    assert_eq!(
        status(&server.client(&ca, Some(&signed)), &url).await,
        Some(StatusCode::OK)
    );
    server.stop().await;
}

#[tokio::test]
async fn verify_client_cert_if_given_accepts_none_but_refuses_an_untrusted_one() {
    let dir = Dir::new("ifgiven");
    let ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    dir.server_files(&ca.server());
    dir.write("client-ca.pem", &client_ca.pem());
    let server = Server::start(&dir.write(
        "web.yml",
        &format!(
            "{TLS}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: client-ca.pem\n"
        ),
    ))
    .await;
    let url = server.https("/metrics");
    assert_eq!(
        status(&server.client(&ca, None), &url).await,
        Some(StatusCode::OK)
    );
    let signed = client_ca.client();
    assert_eq!(
        status(&server.client(&ca, Some(&signed)), &url).await,
        Some(StatusCode::OK)
    );
    let rogue = Ca::new("rogue CA").client();
    assert_eq!(status(&server.client(&ca, Some(&rogue)), &url).await, None);
    server.stop().await;
}

#[tokio::test]
async fn basic_auth_guards_every_endpoint_and_headers_are_added() {
    let dir = Dir::new("basic");
    let ca = Ca::new("test CA");
    dir.server_files(&ca.server());
    let yaml = format!(
        "{TLS}basic_auth_users:\n  prometheus: {}\n  other: {}\n\
         http_server_config:\n  headers:\n    X-Frame-Options: deny\n    \
         Strict-Transport-Security: max-age=31536000\n",
        hash("secret"),
        hash("other-secret"),
    );
    let server = Server::start(&dir.write("web.yml", &yaml)).await;
    let client = server.client(&ca, None);

    let assert_headers = |response: &reqwest::Response| {
        let headers = response.headers();
        assert_eq!(headers["x-frame-options"], "deny");
        assert_eq!(headers["strict-transport-security"], "max-age=31536000");
    };

    for path in ["/metrics", "/", "/no-such-page"] {
        let response = client.get(server.https(path)).send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{path} without credentials"
        );
        assert_eq!(response.headers()["www-authenticate"], "Basic");
        assert_headers(&response);
    }
    for (user, password) in [
        ("prometheus", "wrong"),
        ("nobody", "secret"),
        ("other", "secret"),
    ] {
        let response = client
            .get(server.https("/metrics"))
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{user}/{password}"
        );
        assert_eq!(response.headers()["www-authenticate"], "Basic");
    }
    // Right credentials, twice (the second from the verified cache).
    for _ in 0..2 {
        let response = client
            .get(server.https("/metrics"))
            .basic_auth("prometheus", Some("secret"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_headers(&response);
        assert_eq!(response.text().await.unwrap(), "hss_swr_up 1\n");
    }
    let response = client
        .get(server.https("/no-such-page"))
        .basic_auth("other", Some("other-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn basic_auth_without_tls_serves_plain_http() {
    let dir = Dir::new("plain");
    let server = Server::start(&dir.write(
        "web.yml",
        &format!(
            "basic_auth_users:\n  prometheus: {}\nhttp_server_config:\n  headers:\n    \
             X-Content-Type-Options: nosniff\n",
            hash("secret")
        ),
    ))
    .await;
    let client = Client::new();
    let response = client.get(server.http("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Basic");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let response = client
        .get(server.http("/metrics"))
        .basic_auth("prometheus", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn an_invalid_web_config_is_refused_at_start_with_the_key_named() {
    let dir = Dir::new("invalid");
    let path = dir.write(
        "web.yml",
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n",
    );
    let error = web::load_web_config(&path).unwrap_err().to_string();
    assert!(
        error.starts_with("tls_server_config.cert_file: cannot read ")
            && error.contains("server.pem"),
        "{error}"
    );

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let result = web::serve_with_config(listener, router(), Some(path.clone()), async {}).await;
    let Err(error @ web::Error::Config { .. }) = result else {
        panic!("served with an invalid web config: {result:?}");
    };
    let message = error.to_string();
    assert!(
        message.starts_with("invalid web configuration "),
        "{message}"
    );
    assert!(message.contains("tls_server_config.cert_file"), "{message}");
    assert!(!message.contains('\n'), "{message}");

    let path = dir.write("web.yml", "basic_auth_users:\n  prometheus: secret\n");
    let error = web::load_web_config(&path).unwrap_err().to_string();
    assert!(
        error.starts_with("basic_auth_users.prometheus: not a bcrypt hash"),
        "{error}"
    );

    let path = dir.write("web.yml", "tls_server_config:\n  cert_fil: server.pem\n");
    let error = web::load_web_config(&path).unwrap_err().to_string();
    assert!(error.contains("cert_fil"), "{error}");

    let error = web::load_web_config(&dir.path("missing.yml"))
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("cannot read web config file "), "{error}");
}

#[tokio::test]
async fn a_rewritten_web_config_applies_and_an_invalid_one_keeps_the_last_valid() {
    let dir = Dir::new("reload");
    let ca = Ca::new("test CA");
    dir.server_files(&ca.server());
    let users =
        |password: &str| format!("{TLS}basic_auth_users:\n  prometheus: {}\n", hash(password));
    let path = dir.write("web.yml", &users("first"));
    let server = Server::start(&path).await;
    let url = server.https("/metrics");
    let with = |password: &'static str| {
        let client = server.client(&ca, None);
        let url = url.clone();
        async move {
            client
                .get(url)
                .basic_auth("prometheus", Some(password))
                .send()
                .await
                .ok()
                .map(|r| r.status())
        }
    };
    assert_eq!(with("first").await, Some(StatusCode::OK));

    // A broken file: the server goes on with the last valid configuration.
    dir.write(
        "web.yml",
        "basic_auth_users:\n  prometheus: [not, a, hash]\n",
    );
    for _ in 0..5 {
        assert_eq!(with("first").await, Some(StatusCode::OK));
    }

    // A valid file again, with a new password: it takes over.
    dir.write("web.yml", &users("second"));
    eventually("the new password accepted", || async {
        with("second").await == Some(StatusCode::OK)
    })
    .await;
    assert_eq!(with("first").await, Some(StatusCode::UNAUTHORIZED));

    // Headers too, on the next request.
    dir.write(
        "web.yml",
        &format!(
            "{}http_server_config:\n  headers:\n    X-Frame-Options: sameorigin\n",
            users("second")
        ),
    );
    let client = server.client(&ca, None);
    eventually("the new header sent", || async {
        client
            .get(&url)
            .basic_auth("prometheus", Some("second"))
            .send()
            .await
            .ok()
            .is_some_and(|r| {
                r.headers()
                    .get("x-frame-options")
                    .is_some_and(|v| v == "sameorigin")
            })
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn rotated_certificates_apply_to_new_connections() {
    let dir = Dir::new("rotate");
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    dir.server_files(&old_ca.server());
    let server = Server::start(&dir.write("web.yml", TLS)).await;
    let url = server.https("/metrics");
    assert_eq!(
        status(&server.client(&old_ca, None), &url).await,
        Some(StatusCode::OK)
    );
    assert_eq!(status(&server.client(&new_ca, None), &url).await, None);

    // Rotate: certificate first, then key. In between the pair does not
    // match; the server keeps the old pair until both are in place.
    let rotated = new_ca.server();
    dir.write("server.pem", &rotated.cert);
    assert_eq!(
        status(&server.client(&old_ca, None), &url).await,
        Some(StatusCode::OK)
    );
    dir.write("server.key", &rotated.key);
    eventually("the new certificate served", || async {
        status(&server.client(&new_ca, None), &url).await == Some(StatusCode::OK)
    })
    .await;
    assert_eq!(status(&server.client(&old_ca, None), &url).await, None);
    server.stop().await;
}

#[tokio::test]
async fn a_rotated_client_ca_applies_to_new_connections() {
    let dir = Dir::new("rotate-ca");
    let ca = Ca::new("server CA");
    let old_clients = Ca::new("old client CA");
    let new_clients = Ca::new("new client CA");
    dir.server_files(&ca.server());
    dir.write("client-ca.pem", &old_clients.pem());
    let server = Server::start(&dir.write(
        "web.yml",
        &format!(
            "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.pem\n"
        ),
    ))
    .await;
    let url = server.https("/metrics");
    let old_client = old_clients.client();
    let new_client = new_clients.client();
    assert_eq!(
        status(&server.client(&ca, Some(&old_client)), &url).await,
        Some(StatusCode::OK)
    );
    dir.write("client-ca.pem", &new_clients.pem());
    eventually("the new client CA trusted", || async {
        status(&server.client(&ca, Some(&new_client)), &url).await == Some(StatusCode::OK)
    })
    .await;
    assert_eq!(
        status(&server.client(&ca, Some(&old_client)), &url).await,
        None
    );
    server.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_and_stops_accepting() {
    let dir = Dir::new("shutdown");
    let ca = Ca::new("test CA");
    dir.server_files(&ca.server());
    let server = Server::start(&dir.write("web.yml", TLS)).await;
    let client = server.client(&ca, None);
    assert_eq!(
        status(&client, &server.https("/metrics")).await,
        Some(StatusCode::OK)
    );
    let address = server.address;
    server.stop().await;
    assert!(tokio::net::TcpStream::connect(address).await.is_err());
}

/// Whether the server closes `stream` (EOF or an error) within 10 s.
async fn closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 256];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn tls_connections_are_held_to_the_handshake_and_header_timeouts() {
    use tokio::io::AsyncWriteExt as _;
    let dir = Dir::new("tls-limits");
    let ca = Ca::new("test CA");
    dir.server_files(&ca.server());
    let limits = web::ServerLimits {
        tls_handshake_timeout: Duration::from_millis(200),
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(60),
        ..web::ServerLimits::default()
    };
    let server = Server::start_with_limits(&dir.write("web.yml", TLS), limits).await;

    // A client that never starts the handshake is closed at its timeout.
    let mut silent = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    assert!(closed(&mut silent).await, "handshake timeout");

    // One that finishes the handshake but never finishes its request head
    // is closed at the header timeout, without an answer.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::pem::PemObject::from_pem_slice(ca.pem().as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut slow = connector.connect(name, tcp).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    slow.flush().await.unwrap();
    assert!(closed(&mut slow).await, "header read timeout");

    // Others are served.
    let client = server.client(&ca, None);
    assert_eq!(
        status(&client, &server.https("/metrics")).await,
        Some(StatusCode::OK)
    );
    server.stop().await;
}
