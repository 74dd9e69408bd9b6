//! TLS for the gRPC listener: the certificate chain, key and client CA read from PEM
//! files and re-read on SIGHUP or when one of them changes (new connections get the
//! new files; the listener and open connections stay), and the identity a client
//! certificate carries.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::rustls;
use tracing::{info, warn};

use crate::config::net::TlsConfig;

/// How often the files are checked for a change.
const POLL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS {what} {path}: {reason}")]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("TLS: {0}")]
    Config(String),
}

/// The live TLS configuration of a listener.
pub struct Tls {
    files: TlsConfig,
    current: ArcSwap<rustls::ServerConfig>,
    /// The files' modification times when last loaded.
    stamps: Mutex<Vec<Option<SystemTime>>>,
}

impl Tls {
    /// Loads the files; an error names the file and what is wrong with it.
    pub fn load(files: &TlsConfig) -> Result<Arc<Tls>, TlsError> {
        let stamps = stamps(files);
        let cfg = build(files)?;
        Ok(Arc::new(Tls {
            files: files.clone(),
            current: ArcSwap::from_pointee(cfg),
            stamps: Mutex::new(stamps),
        }))
    }

    /// The acceptor for the next connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// Whether client certificates are required.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Re-reads the files. A set that does not load is logged and the old one kept:
    /// a half-written certificate never takes the listener down.
    pub fn reload(&self, why: &str) {
        let now = stamps(&self.files);
        match build(&self.files) {
            Ok(cfg) => {
                self.current.store(Arc::new(cfg));
                *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) = now;
                info!(why, "TLS certificate reloaded");
            }
            Err(e) => {
                // Not retried until the files change again (or another SIGHUP).
                *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) = now;
                warn!(why, error = %e, "TLS certificate not reloaded; still serving the previous one");
            }
        }
    }

    /// Reloads on SIGHUP and when a file's modification time changes, until `stop`.
    pub async fn watch(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    self.reload("SIGHUP");
                }
                _ = tick.tick() => {
                    let changed = {
                        let old = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
                        *old != stamps(&self.files)
                    };
                    if changed {
                        self.reload("a certificate file changed");
                    }
                }
            }
        }
    }
}

fn paths(files: &TlsConfig) -> impl Iterator<Item = &Path> {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(PathBuf::as_path)
}

fn stamps(files: &TlsConfig) -> Vec<Option<SystemTime>> {
    paths(files)
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

fn file_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(String) -> TlsError + 'a {
    move |reason| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason,
    }
}

fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error(what, path)(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error(what, path)("holds no PEM certificate".into()));
    }
    Ok(certs)
}

fn build(files: &TlsConfig) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs("certificate", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| file_error("key", &files.key)(e.to_string()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs("client CA", ca)? {
                roots
                    .add(c)
                    .map_err(|e| file_error("client CA", ca)(e.to_string()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| file_error("client CA", ca)(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder.with_single_cert(chain, key).map_err(|e| {
        file_error("certificate", &files.cert)(format!("does not go with the key: {e}"))
    })?;
    // gRPC is HTTP/2 only.
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// What identifies a client certificate in the ledger: its subject's common name and
/// DNS names, when it has them, and always its SHA-256 fingerprint.
pub fn identity(cert: &CertificateDer<'_>) -> String {
    let fingerprint = hex::encode(Sha256::digest(cert.as_ref()));
    let mut parts = Vec::new();
    if let Ok(ee) = webpki::EndEntityCert::try_from(cert) {
        if let Some(cn) = common_name(ee.subject()) {
            parts.push(format!("cn={}", crate::safe_text::escape(&cn)));
        }
        for dns in ee.valid_dns_names() {
            parts.push(format!("dns={dns}"));
        }
    }
    parts.push(format!("sha256={fingerprint}"));
    parts.join(" ")
}

/// The first commonName (OID 2.5.4.3) in a DER-encoded Name, if it is a string.
fn common_name(subject: &[u8]) -> Option<String> {
    const CN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
    let at = subject.windows(CN_OID.len()).position(|w| w == CN_OID)?;
    let rest = subject.get(at + CN_OID.len()..)?;
    let (&tag, rest) = rest.split_first()?;
    // UTF8String, PrintableString, IA5String, TeletexString.
    if !matches!(tag, 0x0c | 0x13 | 0x16 | 0x14) {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    // Short-form lengths only: a common name is at most 64 characters.
    if len >= 0x80 {
        return None;
    }
    let value = rest.get(..usize::from(len))?;
    String::from_utf8(value.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_names_the_common_name_dns_names_and_fingerprint() {
        let mut params = rcgen::CertificateParams::new(vec!["hub.example".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "jupyterhub");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let id = identity(cert.der());
        assert!(
            id.starts_with("cn=jupyterhub dns=hub.example sha256="),
            "{id}"
        );
        assert_eq!(id.len(), "cn=jupyterhub dns=hub.example sha256=".len() + 64);
        // Garbage is still identified by its fingerprint.
        let junk = CertificateDer::from(vec![1u8, 2, 3]);
        assert!(identity(&junk).starts_with("sha256="));
        assert_eq!(
            common_name(&[0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x7f]),
            None
        );
    }
}
