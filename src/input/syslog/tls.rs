//! The server side of a TLS listener (RFC 5425): its certificate and key, and the CA that
//! client certificates must chain to.

use crate::config::{ClientAuth, SyslogTlsConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

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

fn file_error(key: &'static str, path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        key,
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(key, path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(key, path, e))?;
    if certs.is_empty() {
        return Err(file_error(key, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The rustls server configuration of a listener's `tls_config`.
pub fn server_config(config: &SyslogTlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
        return Err(TlsError::Invalid(
            "a listener needs both cert_file and key_file".into(),
        ));
    };
    let chain = certificates("cert_file", cert_file)?;
    let key =
        PrivateKeyDer::from_pem_file(key_file).map_err(|e| file_error("key_file", key_file, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    let builder = match &config.ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates("ca_file", ca_file)? {
                roots
                    .add(cert)
                    .map_err(|e| file_error("ca_file", ca_file, e))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
            let verifier = match config.client_auth {
                Some(ClientAuth::Optional) => verifier.allow_unauthenticated(),
                Some(ClientAuth::Required) | None => verifier,
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Invalid(format!("ca_file: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let server = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Invalid(format!("cert_file and key_file: {e}")))?;
    Ok(Arc::new(server))
}
