//! Bearer secrets: how a fresh one is drawn and how it is stored (only its hash).

use sha2::{Digest, Sha256};

use super::Error;

/// SHA-256 of a token secret, hex, as stored.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A fresh bearer secret: 32 random bytes, URL-safe base64, with a recognizable prefix
/// (so secret scanners can find leaked ones). Only its [`hash_secret`] is ever stored.
pub fn new_secret() -> Result<String, Error> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::NoRandomness(e.to_string()))?;
    Ok(format!(
        "plg_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}
