//! Throw-away TLS material for tests: a self-signed CA, a server certificate
//! for `localhost`, `127.0.0.1` and `::1` signed by it, and optionally a
//! client identity for mutual TLS.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// TLS settings for a [`crate::Receiver`], generated with rcgen.
///
/// Cloning is cheap; keep a clone to write the PEM files the client needs.
#[derive(Clone)]
pub struct TlsOptions {
    ca: Arc<Authority>,
    server_cert_pem: String,
    server_cert_der: CertificateDer<'static>,
    server_key_der: Arc<Vec<u8>>,
    client: Option<ClientIdentity>,
    require_client_cert: bool,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("require_client_cert", &self.require_client_cert)
            .finish_non_exhaustive()
    }
}

/// A certificate and its private key, both PEM-encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM.
    pub key_pem: String,
}

/// Paths written by [`TlsOptions::write_files`], ready for logferry's
/// `tls_config: {ca_file, cert_file, key_file}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate that signed the server (and client) certificates.
    pub ca_file: PathBuf,
    /// The client certificate, when the options carry a client identity.
    pub cert_file: Option<PathBuf>,
    /// The client private key, when the options carry a client identity.
    pub key_file: Option<PathBuf>,
}

struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TlsOptions {
    /// A fresh CA and server certificate; clients need not present a
    /// certificate.
    pub fn generate() -> TlsOptions {
        let ca = Authority::new("loki-receiver test CA");
        let server_key = KeyPair::generate().expect("generate server key");
        let mut params = CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ])
        .expect("server certificate params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&server_key, &ca.cert, &ca.key)
            .expect("sign server certificate");
        TlsOptions {
            server_cert_pem: cert.pem(),
            server_cert_der: cert.der().clone(),
            server_key_der: Arc::new(server_key.serialize_der()),
            ca: Arc::new(ca),
            client: None,
            require_client_cert: false,
        }
    }

    /// Like [`TlsOptions::generate`], and the server requires a client
    /// certificate signed by the same CA (mutual TLS). A matching client
    /// identity is generated; see [`TlsOptions::client_cert_pem`].
    pub fn generate_mtls() -> TlsOptions {
        let mut opts = TlsOptions::generate();
        opts.client = Some(opts.issue_client_identity("logferry-test-client"));
        opts.require_client_cert = true;
        opts
    }

    /// Issues another client certificate signed by this CA, with `common_name`
    /// as its subject.
    pub fn issue_client_identity(&self, common_name: &str) -> ClientIdentity {
        self.ca.issue_client(common_name)
    }

    /// A client identity signed by an unrelated CA: a server started with
    /// [`TlsOptions::generate_mtls`] must refuse it.
    pub fn untrusted_client_identity() -> ClientIdentity {
        Authority::new("some other CA").issue_client("untrusted-client")
    }

    /// The CA certificate, PEM: what the client must trust.
    pub fn ca_pem(&self) -> String {
        self.ca.cert.pem()
    }

    /// The server certificate, PEM.
    pub fn server_cert_pem(&self) -> &str {
        &self.server_cert_pem
    }

    /// The generated client certificate, PEM (mutual TLS only).
    pub fn client_cert_pem(&self) -> Option<&str> {
        self.client.as_ref().map(|c| c.cert_pem.as_str())
    }

    /// The generated client private key, PKCS#8 PEM (mutual TLS only).
    pub fn client_key_pem(&self) -> Option<&str> {
        self.client.as_ref().map(|c| c.key_pem.as_str())
    }

    /// The generated client identity (mutual TLS only).
    pub fn client_identity(&self) -> Option<&ClientIdentity> {
        self.client.as_ref()
    }

    /// Whether the server refuses clients without a certificate from the CA.
    pub fn requires_client_cert(&self) -> bool {
        self.require_client_cert
    }

    /// Writes `ca.pem` and, for mutual TLS, `client.pem` and `client.key`
    /// into `dir`.
    pub fn write_files(&self, dir: &Path) -> std::io::Result<TlsFiles> {
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, self.ca_pem())?;
        let (cert_file, key_file) = match &self.client {
            Some(c) => {
                let cert = dir.join("client.pem");
                let key = dir.join("client.key");
                std::fs::write(&cert, &c.cert_pem)?;
                std::fs::write(&key, &c.key_pem)?;
                (Some(cert), Some(key))
            }
            None => (None, None),
        };
        Ok(TlsFiles {
            ca_file,
            cert_file,
            key_file,
        })
    }

    /// Builds the rustls server configuration (ring provider; ALPN `h2` and
    /// `http/1.1`, as a Go server offers).
    pub(crate) fn server_config(&self) -> Arc<rustls::ServerConfig> {
        install_crypto_provider();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS protocol versions");
        let builder = if self.require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(self.ca.cert.der().clone())
                .expect("add CA to root store");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("client certificate verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.to_vec()));
        let mut config = builder
            .with_single_cert(vec![self.server_cert_der.clone()], key)
            .expect("server certificate and key");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// Installs ring as the process-wide rustls crypto provider, ignoring the
/// error when one is already installed.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Authority {
    fn new(common_name: &str) -> Authority {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        Authority { cert, key }
    }

    fn issue_client(&self, common_name: &str) -> ClientIdentity {
        let key = KeyPair::generate().expect("generate client key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign client certificate");
        ClientIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}
