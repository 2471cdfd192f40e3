//! The TLS side of the broker connection: a rustls client configuration (ring
//! provider) from `[mqtt] ca_file` or the system's CA store, with the client
//! certificate and key when the broker authenticates clients by certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::UpstreamError;
use crate::config::{read_secret_file, MqttConfig};

/// Reads every certificate of a PEM file; at least one.
fn certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, UpstreamError> {
    let bad = |reason: String| UpstreamError::TlsFile {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|error| bad(error.to_string()))?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| bad(format!("not PEM certificates: {error}")))?;
    if certificates.is_empty() {
        return Err(bad(
            "no certificate in it (expected \"-----BEGIN CERTIFICATE-----\" blocks)".into(),
        ));
    }
    Ok(certificates)
}

/// The CA certificates of `ca_file`, or the system's CA store without one.
fn roots(ca_file: Option<&Path>, key: &'static str) -> Result<RootCertStore, UpstreamError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for certificate in certificates(path, key)? {
                roots
                    .add(certificate)
                    .map_err(|error| UpstreamError::TlsFile {
                        what: key,
                        path: path.to_path_buf(),
                        reason: format!("unusable CA certificate: {error}"),
                    })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(UpstreamError::NoSystemRoots(
                    found
                        .errors
                        .first()
                        .map(|error| error.to_string())
                        .unwrap_or_else(|| "no certificates found".into()),
                ));
            }
        }
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls configuration for HTTPS downloads: server certificates checked against
/// `ca_file` (`[firmware] download_ca_file`) or the system's CA store.
pub fn https_client_config(ca_file: Option<&Path>) -> Result<ClientConfig, UpstreamError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(UpstreamError::Tls)?
        .with_root_certificates(roots(ca_file, "download_ca_file")?)
        .with_no_client_auth())
}

/// The rustls configuration for `config`'s broker.
pub fn client_config(config: &MqttConfig) -> Result<Arc<ClientConfig>, UpstreamError> {
    let roots = roots(config.ca_file.as_deref(), "ca_file")?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(UpstreamError::Tls)?
        .with_root_certificates(roots);
    let client = match (&config.client_cert_file, &config.client_key_file) {
        (Some(cert_path), Some(key_path)) => {
            let chain = certificates(cert_path, "client_cert_file")?;
            let key_bytes = read_secret_file(key_path).map_err(|source| UpstreamError::Secret {
                key: "client_key_file",
                source,
            })?;
            let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|error| {
                UpstreamError::TlsFile {
                    what: "client_key_file",
                    path: key_path.clone(),
                    reason: format!("not a PEM private key: {error}"),
                }
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| UpstreamError::TlsFile {
                    what: "client_key_file",
                    path: key_path.clone(),
                    reason: format!("does not go with client_cert_file: {error}"),
                })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(client))
}
