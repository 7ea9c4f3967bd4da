//! Secrets in memory ([`Secret`]) and at rest ([`Sealer`]).
//!
//! A [`Secret`] never prints itself: `Debug`, `Display` and `Serialize` all
//! write `[redacted]`, and its memory is zeroed on drop. Code that needs the
//! value calls [`Secret::expose`], which makes every use greppable.
//!
//! At rest every secret (tokens, API keys, PKCE verifiers) is sealed with
//! XChaCha20-Poly1305 keyed by the master key (`storage.master_key`). The
//! associated data binds the ciphertext to its tenant and field, so a sealed
//! value copied to another row or column fails to open instead of leaking a
//! key into the wrong tenant's deliveries.
//!
//! Sealed layout (version 1): `0x01 | key_id (4 bytes) | nonce (24) | ciphertext+tag`.
//! `key_id` is the first four bytes of SHA-256("ddrelay key id" | key): it
//! names the key without revealing it, so a wrong master key is reported as
//! such rather than as corruption.

use std::fmt;

use base64::Engine as _;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// A secret string. Redacted everywhere it could be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

pub const REDACTED: &str = "[redacted]";

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(Zeroizing::new(value.into()))
    }

    /// The plaintext. Keep the borrow short; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// Random bytes from the operating system, base64url without padding.
pub fn random_token(bytes: usize) -> String {
    let mut buf = Zeroizing::new(vec![0u8; bytes]);
    fill_random(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&*buf)
}

/// Fills `buf` from the OS CSPRNG. An OS without randomness cannot run a
/// security product: this is the one stated invariant that panics.
pub fn fill_random(buf: &mut [u8]) {
    #[allow(clippy::expect_used)]
    getrandom::fill(buf).expect("the operating system's random number generator failed");
}

/// Constant-time equality for bearer tokens.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    // Hash both sides so the comparison time does not depend on lengths.
    let ha = Sha256::digest(a);
    let hb = Sha256::digest(b);
    ha.ct_eq(&hb).into()
}

/// The 32-byte master key.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

/// Why a master key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MasterKeyError {
    #[error(
        "is not valid base64 (expected 32 random bytes, base64-encoded, e.g. from `openssl rand -base64 32`)"
    )]
    NotBase64,
    #[error(
        "decodes to {0} bytes, expected exactly 32 (generate one with `openssl rand -base64 32`)"
    )]
    WrongLength(usize),
}

impl MasterKey {
    /// Parses the base64 form used in config (standard or URL-safe alphabet).
    pub fn from_base64(text: &str) -> Result<MasterKey, MasterKeyError> {
        let text = text.trim();
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(text))
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
                .map_err(|_| MasterKeyError::NotBase64)?,
        );
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| MasterKeyError::WrongLength(bytes.len()))?;
        Ok(MasterKey(Zeroizing::new(arr)))
    }

    /// A fresh random key (demo, tests, `ddrelay` first-run helpers).
    pub fn generate() -> MasterKey {
        let mut k = Zeroizing::new([0u8; 32]);
        fill_random(&mut *k);
        MasterKey(k)
    }

    /// The base64 form, for writing a generated key to a file.
    pub fn to_base64(&self) -> Secret {
        Secret::new(base64::engine::general_purpose::STANDARD.encode(*self.0))
    }

    fn key_id(&self) -> [u8; 4] {
        let mut h = Sha256::new();
        h.update(b"ddrelay key id");
        h.update(*self.0);
        let d = h.finalize();
        [d[0], d[1], d[2], d[3]]
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Why a sealed value could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("sealed value is truncated or has an unknown format")]
    Malformed,
    #[error("sealed value was written with a different master key")]
    WrongKey,
    #[error("sealed value failed authentication (tampered, or moved from another tenant or field)")]
    Tampered,
}

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;

/// Seals and opens secrets at rest with the master key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    key_id: [u8; 4],
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

impl Sealer {
    pub fn new(key: &MasterKey) -> Sealer {
        let cipher = XChaCha20Poly1305::new((&*key.0).into());
        Sealer {
            cipher,
            key_id: key.key_id(),
        }
    }

    fn aad(scope: &str, field: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(16 + scope.len() + field.len());
        aad.extend_from_slice(b"ddrelay/v1\0");
        aad.extend_from_slice(scope.as_bytes());
        aad.push(0);
        aad.extend_from_slice(field.as_bytes());
        aad
    }

    /// Seals `plaintext` for `scope` (a tenant id, or a flow id) and `field`.
    pub fn seal(&self, scope: &str, field: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let aad = Sealer::aad(scope, field);
        // Encryption with a valid key and nonce length cannot fail.
        #[allow(clippy::expect_used)]
        let ct = self
            .cipher
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encryption failed");
        let mut out = Vec::with_capacity(HEADER_LEN + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&self.key_id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Seals a [`Secret`].
    pub fn seal_secret(&self, scope: &str, field: &str, secret: &Secret) -> Vec<u8> {
        self.seal(scope, field, secret.expose().as_bytes())
    }

    /// Opens raw bytes sealed by [`Sealer::seal`] with the same scope and field.
    pub fn open(
        &self,
        scope: &str,
        field: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < HEADER_LEN + 16 || sealed[0] != VERSION {
            return Err(SealError::Malformed);
        }
        if sealed[1..5] != self.key_id {
            return Err(SealError::WrongKey);
        }
        let nonce: [u8; NONCE_LEN] = sealed[5..HEADER_LEN]
            .try_into()
            .map_err(|_| SealError::Malformed)?;
        let aad = Sealer::aad(scope, field);
        self.cipher
            .decrypt(
                (&nonce).into(),
                Payload {
                    msg: &sealed[HEADER_LEN..],
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Tampered)
    }

    /// Opens a sealed UTF-8 secret.
    pub fn open_secret(
        &self,
        scope: &str,
        field: &str,
        sealed: &[u8],
    ) -> Result<Secret, SealError> {
        let bytes = self.open(scope, field, sealed)?;
        let s = std::str::from_utf8(&bytes).map_err(|_| SealError::Tampered)?;
        Ok(Secret::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"[redacted]\"");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn master_key_parsing() {
        let k = MasterKey::generate();
        let b64 = k.to_base64();
        assert!(MasterKey::from_base64(b64.expose()).is_ok());
        assert_eq!(
            MasterKey::from_base64("not base64!!").unwrap_err(),
            MasterKeyError::NotBase64
        );
        assert_eq!(
            MasterKey::from_base64("aGVsbG8=").unwrap_err(),
            MasterKeyError::WrongLength(5)
        );
    }

    #[test]
    fn seal_round_trip_and_binding() {
        let sealer = Sealer::new(&MasterKey::generate());
        let sealed = sealer.seal("tenant-a", "api_key", b"abc123");
        assert_eq!(
            &*sealer.open("tenant-a", "api_key", &sealed).unwrap(),
            b"abc123"
        );
        assert_eq!(
            sealer.open("tenant-b", "api_key", &sealed).unwrap_err(),
            SealError::Tampered
        );
        assert_eq!(
            sealer
                .open("tenant-a", "refresh_token", &sealed)
                .unwrap_err(),
            SealError::Tampered
        );
        let other = Sealer::new(&MasterKey::generate());
        assert_eq!(
            other.open("tenant-a", "api_key", &sealed).unwrap_err(),
            SealError::WrongKey
        );
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            sealer.open("tenant-a", "api_key", &flipped).unwrap_err(),
            SealError::Tampered
        );
        assert_eq!(
            sealer
                .open("tenant-a", "api_key", &sealed[..10])
                .unwrap_err(),
            SealError::Malformed
        );
    }

    #[test]
    fn ct_eq_works() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }
}
