//! TLS settings of a client (`tls_config:`), as a rustls configuration.

use crate::config::TlsConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::{Arc, OnceLock};

/// A `tls_config` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls_config.{key}: cannot read {path}: {message}")]
    File {
        key: &'static str,
        path: String,
        message: String,
    },
    #[error("tls_config: {0}")]
    Invalid(String),
}

fn read_pem_certs(
    key: &'static str,
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_err = |message: String| TlsError::File {
        key,
        path: path.display().to_string(),
        message,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// When a client's certificate roots (the system's and `ca_file`'s) are loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roots {
    /// At start: the client is configured for TLS (an `https` URL or proxy), and a system
    /// without any usable root then fails at start rather than at every push.
    Now,
    /// At the first handshake, if ever: a client of a plain `http` URL needs them only if a
    /// server redirects it to `https`. Loading them costs a few milliseconds and some hundred
    /// kilobytes of memory at start (292 files on Debian).
    AtFirstHandshake,
}

impl Roots {
    /// [`Roots::Now`] when any of the URLs a client talks to (its servers, its proxy) uses TLS.
    pub fn for_urls<'a>(urls: impl IntoIterator<Item = &'a str>) -> Roots {
        let tls = |url: &str| {
            url.split_once(':')
                .is_some_and(|(scheme, _)| !scheme.eq_ignore_ascii_case("http"))
        };
        if urls.into_iter().any(tls) {
            Roots::Now
        } else {
            Roots::AtFirstHandshake
        }
    }
}

/// Builds the rustls client configuration: the system's roots plus `ca_file`, a client
/// certificate when `cert_file`/`key_file` are set, certificates checked against
/// `server_name` when set, or not checked at all with `insecure_skip_verify`.
pub fn client_config(
    tls: Option<&TlsConfig>,
    roots: Roots,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let default = TlsConfig::default();
    let tls = tls.unwrap_or(&default);
    // `ca_file` is read and checked now whatever `roots` says: a mistake in it is the
    // config's, and is reported at start.
    let mut extra = rustls::RootCertStore::empty();
    if let Some(ca) = &tls.ca_file {
        for cert in read_pem_certs("ca_file", ca)? {
            extra
                .add(cert)
                .map_err(|e| TlsError::Invalid(format!("ca_file {}: {e}", ca.display())))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = if tls.insecure_skip_verify {
        Arc::new(AcceptAnyCert(provider.clone()))
    } else {
        let name = match &tls.server_name {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|e| TlsError::Invalid(format!("server_name {name:?}: {e}")))?,
            ),
            None => None,
        };
        let checked = CheckedAgainstRoots {
            provider: provider.clone(),
            extra,
            name,
            verifier: OnceLock::new(),
        };
        if roots == Roots::Now {
            checked.webpki().map_err(TlsError::Invalid)?;
        }
        Arc::new(checked)
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let certs = read_pem_certs("cert_file", cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
                key: "key_file",
                path: key.display().to_string(),
                message: e.to_string(),
            })?;
            builder
                .with_client_auth_cert(certs, key_der)
                .map_err(|e| TlsError::Invalid(format!("cert_file/key_file: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsError::Invalid(
                "cert_file and key_file go together".into(),
            ));
        }
    };
    Ok(config)
}

/// The usual verifier: the system's roots and `extra` (from `ca_file`).
fn webpki_verifier(
    provider: &Arc<rustls::crypto::CryptoProvider>,
    extra: rustls::RootCertStore,
) -> Result<Arc<rustls::client::WebPkiServerVerifier>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    roots.roots.extend(extra.roots);
    rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Invalid(format!("no usable CA certificate: {e}")))
}

/// Certificates checked against the system's roots and `ca_file`'s, and against
/// `server_name` instead of the URL's host when it is set. The roots are loaded when
/// [`Roots`] says: at start, or at the first certificate to check.
#[derive(Debug)]
struct CheckedAgainstRoots {
    provider: Arc<rustls::crypto::CryptoProvider>,
    extra: rustls::RootCertStore,
    name: Option<ServerName<'static>>,
    verifier: OnceLock<Result<Arc<rustls::client::WebPkiServerVerifier>, String>>,
}

impl CheckedAgainstRoots {
    fn webpki(&self) -> Result<&Arc<rustls::client::WebPkiServerVerifier>, String> {
        self.verifier
            .get_or_init(|| {
                webpki_verifier(&self.provider, self.extra.clone()).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn loaded(&self) -> Result<&Arc<rustls::client::WebPkiServerVerifier>, rustls::Error> {
        self.webpki().map_err(rustls::Error::General)
    }
}

impl ServerCertVerifier for CheckedAgainstRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = self.name.as_ref().unwrap_or(server_name);
        self.loaded()?
            .verify_server_cert(end_entity, intermediates, name, ocsp, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.loaded()?.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.loaded()?.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        // What the roots' verifier would say, known without loading them.
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `insecure_skip_verify: true`: any certificate is accepted (signatures are still checked,
/// so the session is encrypted, just not authenticated).
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
