//! rustls client configurations for upstreams: the system's roots (read once per process) or a
//! `ca_file`, a client certificate, `min_version`, and Prometheus's `insecure_skip_verify`.
//! The `ring` provider: it builds with a C compiler alone (aws-lc wants cmake).

use std::path::Path;
use std::sync::{Arc, LazyLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{self, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::config::{TlsSettings, TlsVersion};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

/// The system's trust store, or Mozilla's bundled roots where the system has none (a
/// distroless image without ca-certificates).
static SYSTEM_ROOTS: LazyLock<Arc<RootCertStore>> = LazyLock::new(|| {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::info!(
            "no CA certificates found on the system; https upstreams are checked against the \
             roots built into cardguard (set tls_config.ca_file to choose)"
        );
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    Arc::new(roots)
});

/// The configuration of the forwarder's shared client: system roots, TLS 1.2 and 1.3.
pub fn default_config() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(SYSTEM_ROOTS.clone())
        .with_no_client_auth()
}

/// Read the files of `tls` and build its configuration. Errors name the key and the file,
/// never a file's content.
pub fn client_config(tls: &TlsSettings) -> Result<ClientConfig, String> {
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls_config.min_version: {e}"))?;
    let roots = match &tls.ca_file {
        None => SYSTEM_ROOTS.clone(),
        Some(path) => Arc::new(read_ca(path)?),
    };
    let builder = builder.with_root_certificates(roots);
    let mut config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key_file)) => {
            let chain = read_certs(cert, "cert_file")?;
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
                format!(
                    "tls_config.key_file {}: no usable private key: {e}",
                    key_file.display()
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                format!(
                    "tls_config.cert_file {} and key_file {}: {e}",
                    cert.display(),
                    key_file.display()
                )
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    if tls.insecure_skip_verify {
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(NoVerification(
                provider().signature_verification_algorithms,
            )));
    }
    Ok(config)
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("tls_config.{key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls_config.{key} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

fn read_ca(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, "ca_file")? {
        roots
            .add(cert)
            .map_err(|e| format!("tls_config.ca_file {}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// `insecure_skip_verify: true`: any certificate is accepted (the handshake's signatures are
/// still checked, so the connection is at least with the holder of that certificate's key).
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
