//! The optional rustls listener (TLS is usually terminated at the Kubernetes
//! Ingress, but the seed asks the callback URL to be served over TLS).

use std::sync::Arc;

use anyhow::Context;
use callbridge_runtime::config::TlsFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A rustls server configuration from a PEM certificate chain and private key.
#[tracing::instrument(skip_all, fields(cert = %files.cert_path.display(), key = %files.key_path.display()))]
pub fn server_config(files: &TlsFiles) -> anyhow::Result<rustls::ServerConfig> {
    let cert_pem = std::fs::read(&files.cert_path).with_context(|| {
        format!(
            "while reading the TLS certificate {}",
            files.cert_path.display()
        )
    })?;
    let key_pem = std::fs::read(&files.key_path)
        .with_context(|| format!("while reading the TLS key {}", files.key_path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| {
            format!(
                "while parsing the TLS certificate {}",
                files.cert_path.display()
            )
        })?;
    if chain.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", files.cert_path.display());
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .with_context(|| format!("while parsing the TLS key {}", files.key_path.display()))?;
    // An explicit provider: the dependency tree enables more than one rustls backend, and
    // the process-wide default would then be ambiguous.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("while choosing TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("while pairing the TLS certificate with its key")
}
