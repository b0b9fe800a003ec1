//! TLS: where the certificates are loaded, chosen by SNI, and reloaded. TLS lives in the server
//! only; plugins never see a key, only the facts of a session ([`TlsInfo`]).
//!
//! - STARTTLS (RFC 3207) on the normal listeners, implicit TLS (RFC 8314) on `--listen-tls`.
//! - TLS 1.2 and 1.3 (rustls, ring provider); no client certificates.
//! - `config/tls` lists certificates (see [`crate::config`]); the first one is the default,
//!   and a client that sends SNI gets the first certificate valid for that name.
//! - [`Tls::reload`] (on SIGHUP) swaps the certificates for new handshakes; sessions already
//!   encrypted keep theirs. A reload that fails keeps the old certificates.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ProtocolVersion, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use wasmtpd_smtp::TlsInfo;

/// One `certificate CHAIN KEY` line of `config/tls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// PEM: the server's certificate first, then its intermediates.
    pub chain: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Where the config line is, for error messages.
    pub origin: crate::config::Origin,
}

/// The server's TLS state: one rustls config whose certificates can be swapped.
pub struct Tls {
    config: Arc<ServerConfig>,
    certificates: Arc<Certificates>,
}

/// The loaded certificates, in config order.
#[derive(Debug)]
struct Certificates {
    current: RwLock<Arc<Vec<Arc<CertifiedKey>>>>,
}

impl Tls {
    /// Loads every certificate; relative paths are taken from `base`. An error names the
    /// config line and the file. An empty list is allowed (no STARTTLS until a reload adds one).
    pub fn load(files: &[CertificateFiles], base: &Path) -> Result<Tls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let keys = load_all(files, base, &provider)?;
        let certificates = Arc::new(Certificates { current: RwLock::new(Arc::new(keys)) });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(certificates.clone());
        // Our cipher suite order (rustls's, strongest first) wins over the client's.
        config.ignore_client_order = true;
        Ok(Tls { config: Arc::new(config), certificates })
    }

    /// Replaces the certificates for new handshakes; on error the old ones stay.
    pub fn reload(&self, files: &[CertificateFiles], base: &Path) -> Result<usize, String> {
        let keys = load_all(files, base, self.config.crypto_provider())?;
        let n = keys.len();
        *self.certificates.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(n)
    }

    /// Whether any certificate is loaded (STARTTLS is offered only then).
    pub fn has_certificates(&self) -> bool {
        !self.certificates.current.read().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }
}

fn load_all(
    files: &[CertificateFiles],
    base: &Path,
    provider: &CryptoProvider,
) -> Result<Vec<Arc<CertifiedKey>>, String> {
    files.iter().map(|f| load_one(f, base, provider).map(Arc::new)).collect()
}

fn load_one(files: &CertificateFiles, base: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain_path = base.join(&files.chain);
    let key_path = base.join(&files.key);
    let err = |what: String| format!("{}: {what}", files.origin);
    let pem = std::fs::read(&chain_path).map_err(|e| err(format!("cannot read {}: {e}", chain_path.display())))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("{}: not a PEM certificate chain: {e}", chain_path.display())))?;
    if chain.is_empty() {
        return Err(err(format!("{}: no certificate in it", chain_path.display())));
    }
    let pem = std::fs::read(&key_path).map_err(|e| err(format!("cannot read {}: {e}", key_path.display())))?;
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| err(format!("{}: not a PEM private key: {e}", key_path.display())))?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        err(format!("{} and {} do not make a usable certificate: {e}", chain_path.display(), key_path.display()))
    })?;
    // Fail now, not at the first handshake, if the certificate cannot be parsed.
    certified
        .end_entity_cert()
        .and_then(ParsedCertificate::try_from)
        .map_err(|e| err(format!("{}: {e}", chain_path.display())))?;
    Ok(certified)
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certificates = self.current.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(name) = hello.server_name().and_then(|n| DnsName::try_from(n.to_string()).ok()) {
            let name = ServerName::DnsName(name);
            let matching = certificates.iter().find(|ck| {
                ck.end_entity_cert()
                    .and_then(ParsedCertificate::try_from)
                    .and_then(|cert| rustls::client::verify_server_name(&cert, &name))
                    .is_ok()
            });
            if let Some(ck) = matching {
                return Some(ck.clone());
            }
        }
        certificates.first().cloned()
    }
}

/// The facts of an established session, as plugins and the Received header see them.
pub fn session_info<S>(stream: &TlsStream<S>) -> TlsInfo {
    let (_, conn) = stream.get_ref();
    let version = match conn.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(other) => format!("{other:?}"),
        None => "unknown".to_string(),
    };
    let cipher = conn.negotiated_cipher_suite().map_or_else(
        || "unknown".to_string(),
        |s| s.suite().as_str().map_or_else(|| format!("{:?}", s.suite()), str::to_string),
    );
    TlsInfo { version, cipher, server_name: conn.server_name().map(str::to_string) }
}
