//! PKCE (RFC 7636) and the OAuth `state` value.
//!
//! - The verifier is 64 random bytes, base64url: 86 characters, inside the
//!   43–128 RFC range; the challenge is base64url(SHA-256(verifier)) with
//!   method `S256`, the only method Datadog supports.
//! - `state` is 32 random bytes, base64url. Only its SHA-256 is stored
//!   (a database reader cannot complete a flow), alongside the sealed
//!   verifier.

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::secret::{Secret, random_token};

/// Random bytes behind a verifier (64 → 86 base64url characters).
const VERIFIER_BYTES: usize = 64;
/// Random bytes behind a `state` (256 bits).
const STATE_BYTES: usize = 32;

/// A fresh PKCE verifier.
pub(crate) fn verifier() -> Secret {
    Secret::new(random_token(VERIFIER_BYTES))
}

/// The S256 challenge for `verifier`.
pub(crate) fn challenge(verifier: &Secret) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.expose().as_bytes()))
}

/// A fresh `state` value.
pub fn state() -> Secret {
    Secret::new(random_token(STATE_BYTES))
}

/// The lookup key stored for a `state` (hex SHA-256).
pub(crate) fn state_hash(state: &str) -> String {
    let digest = Sha256::digest(state.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_shape() {
        let v = verifier();
        assert!((43..=128).contains(&v.expose().len()));
        assert!(
            v.expose()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(v.expose(), verifier().expose());
    }

    #[test]
    fn rfc7636_appendix_b_vector() {
        let v = Secret::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(challenge(&v), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn state_hash_is_stable_hex() {
        assert_eq!(state_hash("abc").len(), 64);
        assert_eq!(state_hash("abc"), state_hash("abc"));
        assert_ne!(state_hash("abc"), state_hash("abd"));
    }
}
