//! The webhook signature (README.md "Lifecycle webhooks: tell your UI who
//! must reconnect"):
//! `DD-Relay-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`,
//! keyed with `[webhooks] secret`. The timestamp is signed with the body,
//! so a receiver that refuses old `t` values (five minutes is usual) also
//! refuses a replayed delivery; `examples/webhook_receiver.rs` verifies it.
//! HMAC-SHA256 is RFC 2104 with SHA-256 (test vectors: RFC 4231).

use hmac::{KeyInit as _, Mac as _};

use crate::secret::Secret;

/// The header that carries the signature.
pub(crate) const HEADER: &str = "DD-Relay-Signature";

type HmacSha256 = hmac::Hmac<sha2_hmac::Sha256>;

/// Lowercase hex of HMAC-SHA256(`key`, `message`).
pub(crate) fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    // HMAC takes a key of any length: this cannot fail.
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        return String::new();
    };
    mac.update(message);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The header's value for `body` sent at `t` (Unix seconds).
pub(crate) fn header_value(secret: &Secret, t: i64, body: &str) -> String {
    let v1 = hmac_hex(secret.expose().as_bytes(), format!("{t}.{body}").as_bytes());
    format!("t={t},v1={v1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test cases 1 and 2 (HMAC-SHA-256).
    #[test]
    fn rfc_4231_vectors() {
        assert_eq!(
            hmac_hex(&[0x0b; 20], b"Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hmac_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_header_signs_timestamp_and_body() {
        let secret = Secret::new("whsec-test-0123456789");
        let v = header_value(&secret, 1_700_000_000, "{\"id\":\"evt_1\"}");
        let expected = hmac_hex(b"whsec-test-0123456789", b"1700000000.{\"id\":\"evt_1\"}");
        assert_eq!(v, format!("t=1700000000,v1={expected}"));
        assert_ne!(
            v,
            header_value(&secret, 1_700_000_001, "{\"id\":\"evt_1\"}")
        );
        assert!(!v.contains("whsec"));
    }
}
