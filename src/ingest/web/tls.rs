//! The listener's rustls configuration from `tls_server_config`: the certificate and key,
//! the client certificate policy (Go's five `client_auth_type`s), the protocol versions, the
//! TLS 1.2 cipher suites, and ALPN (`h2` when HTTP/2 is on, then `http/1.1`). The `ring`
//! provider, as for upstreams (`forward::tls`).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{self, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedCipherSuite,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use super::config::{ClientAuth, TlsServerSettings, TlsVersion, WebConfigError};

/// A TLS 1.2 cipher suite by its IANA name, as Go and the exporter toolkit spell it (Go's
/// `..._CHACHA20_POLY1305` without the `_SHA256` too).
pub fn cipher_suite(name: &str) -> Option<SupportedCipherSuite> {
    crypto::ring::ALL_CIPHER_SUITES
        .iter()
        .filter(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
        .find(|s| {
            let n = format!("{:?}", s.suite());
            n == name || n.strip_suffix("_SHA256") == Some(name)
        })
        .copied()
}

fn file_error(key: &'static str, path: &Path, message: impl ToString) -> WebConfigError {
    WebConfigError::File {
        key,
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

fn read_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, WebConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error(key, path, e))?;
    if certs.is_empty() {
        return Err(file_error(key, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// Read the files of `t` and build the listener's TLS configuration. Errors name the key and
/// the file, never a file's content.
pub fn server_config(t: &TlsServerSettings, http2: bool) -> Result<ServerConfig, WebConfigError> {
    let mut provider = crypto::ring::default_provider();
    if !t.cipher_suites.is_empty() {
        let tls13 = provider
            .cipher_suites
            .iter()
            .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
            .copied();
        // Validated names: `cipher_suite` finds each.
        let tls12 = t.cipher_suites.iter().filter_map(|n| cipher_suite(n));
        provider.cipher_suites = tls13.chain(tls12).collect();
    }
    let provider = Arc::new(provider);
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::TLS13, &rustls::version::TLS13),
        (TlsVersion::TLS12, &rustls::version::TLS12),
    ]
    .into_iter()
    .filter(|(v, _)| (t.min_version..=t.max_version).contains(v))
    .map(|(_, p)| p)
    .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| WebConfigError::Tls(e.to_string()))?;
    let verifier: Arc<dyn ClientCertVerifier> = match t.client_auth {
        ClientAuth::NoClientCert => WebPkiClientVerifier::no_client_auth(),
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => {
            Arc::new(AnyClientCert {
                mandatory: t.client_auth == ClientAuth::RequireAnyClientCert,
                algorithms: provider.signature_verification_algorithms,
            })
        }
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let Some(ca) = &t.client_ca_file else {
                return Err(WebConfigError::ClientAuthWithoutCa(t.client_auth));
            };
            let mut roots = RootCertStore::empty();
            for cert in read_certs("client_ca_file", ca)? {
                roots
                    .add(cert)
                    .map_err(|e| file_error("client_ca_file", ca, e))?;
            }
            let b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let b = if t.client_auth == ClientAuth::VerifyClientCertIfGiven {
                b.allow_unauthenticated()
            } else {
                b
            };
            b.build().map_err(|e| file_error("client_ca_file", ca, e))?
        }
    };
    let chain = read_certs("cert_file", &t.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&t.key_file).map_err(|e| {
        file_error(
            "key_file",
            &t.key_file,
            format!("no usable private key: {e}"),
        )
    })?;
    let mut config = builder
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            file_error(
                "cert_file",
                &t.cert_file,
                format!("does not go with key_file {}: {e}", t.key_file.display()),
            )
        })?;
    config.ignore_client_order = t.prefer_server_cipher_suites;
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}

/// `RequestClientCert` and `RequireAnyClientCert`: a client certificate is asked for (and
/// required by the second), never checked against a CA. Its handshake signature still is,
/// as in Go.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
