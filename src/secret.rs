//! Secrets in memory ([`Secret`]) and at rest (`Sealer`).
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

pub(crate) const REDACTED: &str = "[redacted]";

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(Zeroizing::new(value.into()))
    }

    /// The plaintext. Keep the borrow short; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub(crate) fn is_empty(&self) -> bool {
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
pub(crate) fn fill_random(buf: &mut [u8]) {
    #[allow(clippy::expect_used)]
    getrandom::fill(buf).expect("the operating system's random number generator failed");
}

/// Constant-time equality for bearer tokens.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
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
pub(crate) struct Sealer {
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

    /// The associated data binding a sealed value to `scope` and `field`.
    ///
    /// `ddrelay/v1 NUL scope NUL field` for every scope without a NUL byte
    /// (tenant ids and flow scopes never hold one): the first NUL after the
    /// prefix ends the scope, so distinct (scope, field) pairs give distinct
    /// AAD. A scope holding a NUL would make that ambiguous (`a\0b`+`c` vs
    /// `a`+`b\0c`), so it gets a length-prefixed form under another prefix
    /// instead; the two prefixes differ at byte 10, so no AAD of one form
    /// equals one of the other.
    fn aad(scope: &str, field: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(24 + scope.len() + field.len());
        if scope.as_bytes().contains(&0) {
            aad.extend_from_slice(b"ddrelay/v1-lp\0");
            aad.extend_from_slice(&(scope.len() as u64).to_le_bytes());
        } else {
            aad.extend_from_slice(b"ddrelay/v1\0");
        }
        aad.extend_from_slice(scope.as_bytes());
        aad.push(0);
        aad.extend_from_slice(field.as_bytes());
        aad
    }

    /// Seals `plaintext` for `scope` (a tenant id, or a flow id) and `field`.
    pub(crate) fn seal(&self, scope: &str, field: &str, plaintext: &[u8]) -> Vec<u8> {
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
    pub(crate) fn seal_secret(&self, scope: &str, field: &str, secret: &Secret) -> Vec<u8> {
        self.seal(scope, field, secret.expose().as_bytes())
    }

    /// Opens raw bytes sealed by [`Sealer::seal`] with the same scope and field.
    pub(crate) fn open(
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
    pub(crate) fn open_secret(
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
    use proptest::prelude::*;

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

    /// Scopes and fields as the store uses them, plus arbitrary strings
    /// (NUL bytes included: see `Sealer::aad`).
    fn arb_name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9._-]{1,16}",
            Just("flow:".to_string()),
            any::<String>(),
            "[a\\x00b]{0,6}",
        ]
    }

    fn sealer_for(seed: u8) -> Sealer {
        Sealer::new(&MasterKey(Zeroizing::new([seed; 32])))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Whatever is sealed opens to exactly itself, with the same scope
        /// and field.
        #[test]
        fn sealing_round_trips(scope in arb_name(), field in arb_name(), plain in prop::collection::vec(any::<u8>(), 0..600)) {
            let sealer = sealer_for(7);
            let sealed = sealer.seal(&scope, &field, &plain);
            prop_assert_eq!(&*sealer.open(&scope, &field, &sealed).unwrap(), plain.as_slice());
            if let Ok(text) = std::str::from_utf8(&plain) {
                let s = sealer.open_secret(&scope, &field, &sealed).unwrap();
                prop_assert_eq!(s.expose(), text);
            }
        }

        /// Any single-byte change anywhere (version, key id, nonce,
        /// ciphertext, tag) is an error, never a plaintext.
        #[test]
        fn any_byte_flip_is_detected(plain in prop::collection::vec(any::<u8>(), 0..200), at in any::<prop::sample::Index>(), mask in 1u8..=255) {
            let sealer = sealer_for(1);
            let mut sealed = sealer.seal("tenant-a", "api_key", &plain);
            let i = at.index(sealed.len());
            sealed[i] ^= mask;
            prop_assert!(sealer.open("tenant-a", "api_key", &sealed).is_err());
            prop_assert!(sealer.open_secret("tenant-a", "api_key", &sealed).is_err());
        }

        /// Cutting any number of bytes off the end, or adding any bytes to
        /// it, is an error.
        #[test]
        fn truncation_and_extension_are_detected(plain in prop::collection::vec(any::<u8>(), 0..200), cut in any::<prop::sample::Index>(), extra in prop::collection::vec(any::<u8>(), 1..40)) {
            let sealer = sealer_for(2);
            let sealed = sealer.seal("tenant-a", "refresh_token", &plain);
            let keep = cut.index(sealed.len());
            prop_assert!(sealer.open("tenant-a", "refresh_token", &sealed[..keep]).is_err());
            let mut longer = sealed.clone();
            longer.extend_from_slice(&extra);
            prop_assert!(sealer.open("tenant-a", "refresh_token", &longer).is_err());
        }

        /// A sealed value moved to another tenant or field (a copied row or
        /// column), or opened with another master key, is an error.
        #[test]
        fn wrong_scope_field_or_key_is_detected(
            scope in arb_name(), field in arb_name(),
            other_scope in arb_name(), other_field in arb_name(),
            plain in prop::collection::vec(any::<u8>(), 0..100),
            other_key in 0u8..=255,
        ) {
            let sealer = sealer_for(3);
            let sealed = sealer.seal(&scope, &field, &plain);
            if (&other_scope, &field) != (&scope, &field) {
                prop_assert_eq!(sealer.open(&other_scope, &field, &sealed).unwrap_err(), SealError::Tampered);
            }
            if (&scope, &other_field) != (&scope, &field) {
                prop_assert_eq!(sealer.open(&scope, &other_field, &sealed).unwrap_err(), SealError::Tampered);
            }
            if (&other_scope, &other_field) != (&scope, &field) {
                prop_assert!(sealer.open(&other_scope, &other_field, &sealed).is_err());
            }
            if other_key != 3 {
                prop_assert!(sealer_for(other_key).open(&scope, &field, &sealed).is_err());
            }
        }

        /// Garbage never opens.
        #[test]
        fn arbitrary_bytes_never_open(bytes in prop::collection::vec(any::<u8>(), 0..120)) {
            prop_assert!(sealer_for(4).open("t", "api_key", &bytes).is_err());
        }
    }

    /// The NUL-ambiguity `Sealer::aad` guards against.
    #[test]
    fn scope_field_boundary_is_unambiguous() {
        let sealer = sealer_for(5);
        let sealed = sealer.seal("a\0b", "c", b"key");
        assert_eq!(
            sealer.open("a", "b\0c", &sealed).unwrap_err(),
            SealError::Tampered
        );
        let sealed = sealer.seal("a", "b\0c", b"key");
        assert_eq!(
            sealer.open("a\0b", "c", &sealed).unwrap_err(),
            SealError::Tampered
        );
    }

    /// The AAD of NUL-free scopes is what version 1 always wrote, so values
    /// sealed before stay readable.
    #[test]
    fn aad_of_plain_scopes_is_unchanged() {
        assert_eq!(Sealer::aad("acme", "api_key"), b"ddrelay/v1\0acme\0api_key");
    }

    #[test]
    fn ct_eq_works() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }
}
