//! Keys customers enter are stored sealed: AES-256-GCM (`ring`) under
//! `store.encryption_key`, the tenant's name as associated data (a sealed
//! key copied to another tenant's row does not open). Each sealed value
//! names its key id, so a key can be rotated: `previous_encryption_keys`
//! still open old values, and the gateway re-seals them with the current
//! key as it loads them. The same key also signs what the connect pages
//! hand the browser (CSRF tokens, OAuth `state`), through HMAC-SHA256 under
//! a key derived for that purpose, so those verify on every replica.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use crate::secret::{decode_key, Secret};

pub struct Sealer {
    /// Key id and key; the first seals, all open.
    keys: Vec<(String, LessSafeKey)>,
    mac: hmac::Key,
    rng: SystemRandom,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Sealer").field("key_ids", &ids).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("sealed with key {0}, which is neither store.encryption_key nor in previous_encryption_keys")]
    UnknownKey(String),
    #[error("the sealed value does not open (corrupt, or sealed for another tenant)")]
    Corrupt,
}

impl Sealer {
    /// `keys` were checked by the config (32 bytes each); the first is current.
    pub fn new(keys: &[Secret]) -> Option<Sealer> {
        let mut out = Vec::new();
        let mut mac = None;
        for k in keys {
            let raw = decode_key(k.expose_secret())?;
            let id = hex::encode(&Sha256::digest(raw)[..4]);
            let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &raw).ok()?);
            if mac.is_none() {
                let derived = Sha256::new().chain_update(b"pleo-gateway connect pages v1").chain_update(raw).finalize();
                mac = Some(hmac::Key::new(hmac::HMAC_SHA256, &derived));
            }
            out.push((id, key));
        }
        Some(Sealer { keys: out, mac: mac?, rng: SystemRandom::new() })
    }

    /// The id of the key new values are sealed with.
    pub fn current_id(&self) -> &str {
        &self.keys[0].0
    }

    pub fn seal(&self, tenant: &str, plain: &Secret) -> String {
        let (id, key) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("the OS random source works");
        let mut data = plain.expose_secret().as_bytes().to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(tenant.as_bytes()), &mut data)
            .expect("AES-GCM seals any length we store");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("v1:{id}:{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// The plain value, and whether it should be sealed again (an old key).
    pub fn open(&self, tenant: &str, sealed: &str) -> Result<(Secret, bool), SealError> {
        let mut parts = sealed.splitn(3, ':');
        let (Some("v1"), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SealError::Corrupt);
        };
        let Some(at) = self.keys.iter().position(|(k, _)| k == id) else {
            return Err(SealError::UnknownKey(id.to_string()));
        };
        let mut data = URL_SAFE_NO_PAD.decode(body).map_err(|_| SealError::Corrupt)?;
        if data.len() < NONCE_LEN {
            return Err(SealError::Corrupt);
        }
        let ciphertext = data.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&data).map_err(|_| SealError::Corrupt)?;
        let mut ciphertext = ciphertext;
        let plain = self.keys[at]
            .1
            .open_in_place(nonce, Aad::from(tenant.as_bytes()), &mut ciphertext)
            .map_err(|_| SealError::Corrupt)?;
        let text = std::str::from_utf8(plain).map_err(|_| SealError::Corrupt)?;
        Ok((Secret::new(text), at != 0))
    }

    /// A MAC over `parts` for `purpose`, base64url: what the pages sign.
    pub fn sign(&self, purpose: &str, parts: &[&str]) -> String {
        let mut ctx = hmac::Context::with_key(&self.mac);
        ctx.update(purpose.as_bytes());
        for p in parts {
            ctx.update(b"\x00");
            ctx.update(p.as_bytes());
        }
        URL_SAFE_NO_PAD.encode(ctx.sign().as_ref())
    }

    /// Whether `mac` is `sign(purpose, parts)`, in constant time.
    pub fn verify(&self, purpose: &str, parts: &[&str], mac: &str) -> bool {
        use subtle::ConstantTimeEq;
        let expected = self.sign(purpose, parts);
        expected.len() == mac.len() && bool::from(expected.as_bytes().ct_eq(mac.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    const K2: &str = "6162636465666768696a6b6c6d6e6f707172737475767778797a303132333435";

    #[test]
    fn seals_opens_and_rotates() {
        let old = Sealer::new(&[Secret::new(K1)]).unwrap();
        let sealed = old.seal("acme", &Secret::new("pk_live_secret"));
        assert!(!sealed.contains("pk_live_secret"));
        assert_eq!(old.open("acme", &sealed).unwrap(), (Secret::new("pk_live_secret"), false));
        assert!(matches!(old.open("globex", &sealed), Err(SealError::Corrupt)), "bound to the tenant");
        let rotated = Sealer::new(&[Secret::new(K2), Secret::new(K1)]).unwrap();
        assert_eq!(rotated.open("acme", &sealed).unwrap(), (Secret::new("pk_live_secret"), true));
        let only_new = Sealer::new(&[Secret::new(K2)]).unwrap();
        assert!(matches!(only_new.open("acme", &sealed), Err(SealError::UnknownKey(_))));
        let mut tampered = sealed.clone();
        tampered.pop();
        assert!(old.open("acme", &tampered).is_err());
        assert_ne!(old.seal("acme", &Secret::new("x")), old.seal("acme", &Secret::new("x")), "fresh nonce");
    }

    #[test]
    fn signatures_bind_their_parts() {
        let s = Sealer::new(&[Secret::new(K1)]).unwrap();
        let mac = s.sign("csrf", &["link-a"]);
        assert!(s.verify("csrf", &["link-a"], &mac));
        assert!(!s.verify("csrf", &["link-b"], &mac));
        assert!(!s.verify("state", &["link-a"], &mac));
        assert!(!s.verify("csrf", &["link-a"], ""));
    }
}
