//! A throwaway certificate authority for the TLS tests (rcgen).

use std::path::{Path, PathBuf};

use privledger::client::ConnectOptions;

/// A throwaway CA, and certificates it signs, as PEM files in a directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = p.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Client options that trust this CA (no client certificate).
    pub fn trusted(&self) -> ConnectOptions {
        ConnectOptions {
            tls_ca: Some(self.ca_file()),
            ..Default::default()
        }
    }

    /// Writes `NAME.pem` and `NAME.key`: a server certificate for localhost and
    /// 127.0.0.1, or a client certificate with common name `cn`.
    pub fn issue(&self, name: &str, cn: &str, server: bool) -> (PathBuf, PathBuf) {
        let sans = if server {
            vec!["localhost".to_string(), "127.0.0.1".to_string()]
        } else {
            Vec::new()
        };
        let mut p = rcgen::CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        // A server's certificate may serve as a client's too (an etcd member's does).
        p.extended_key_usages = if server {
            vec![
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth]
        };
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let (c, k) = (
            self.dir.path().join(format!("{name}.pem")),
            self.dir.path().join(format!("{name}.key")),
        );
        write_atomically(&c, &cert.pem());
        write_atomically(&k, &key.serialize_pem());
        (c, k)
    }
}

/// Replaces `path` whole (a reload never sees half a file).
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
