//! Secrets: credentials read from `{ env: NAME }`, `{ file: PATH }` or an inline
//! string. The value lives only inside [`Secret`], whose `Debug` is redacted and
//! which has no `Display` or `Serialize`: the one way out is
//! [`Secret::expose_secret`], called where an upstream header is built.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// A credential value. Never printed: `Debug` shows a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl Secret {
    pub fn new(value: impl Into<Box<str>>) -> Self {
        Secret(value.into())
    }

    /// The raw value. Call only where it is put on the wire.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// A masked form for humans: the last four characters when the secret is
    /// long enough that they give nothing away (>= 12), otherwise nothing.
    pub fn masked(&self) -> String {
        let chars: Vec<char> = self.0.chars().collect();
        if chars.len() >= 12 {
            let tail: String = chars[chars.len() - 4..].iter().collect();
            format!("••••{tail}")
        } else {
            "••••".to_string()
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Whether a credential can go in an HTTP header as is: non-empty, visible
/// ASCII only (no spaces, no control characters).
/// `n` random bytes from the OS, base64url without padding: client keys,
/// link tokens, nonces, PKCE verifiers.
pub fn random_token(n: usize) -> String {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; n];
    ring::rand::SystemRandom::new().fill(&mut b).expect("the OS random source works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

pub fn is_header_safe(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic())
}

/// A 256-bit key written as 64 hex digits or base64 (standard or URL-safe,
/// padded or not): `store.encryption_key`. `None` if it is anything else.
pub fn decode_key(text: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).ok()?
    } else {
        let engines = [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        engines.iter().find_map(|e| e.decode(text).ok())?
    };
    bytes.try_into().ok()
}

/// Where a secret comes from, as written in gateway.yaml.
#[derive(Clone)]
pub enum SecretSource {
    Env { env: String },
    File { file: PathBuf },
    Inline(String),
}

// An inline secret must not show up when the raw config is debugged.
impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env { env } => f.debug_struct("Env").field("env", env).finish(),
            SecretSource::File { file } => f.debug_struct("File").field("file", file).finish(),
            SecretSource::Inline(_) => f.write_str("Inline(<redacted>)"),
        }
    }
}

const EXPECTED: &str = "a secret: { env: NAME }, { file: PATH } or an inline string";

// A visitor rather than `#[serde(untagged)]`, so that a malformed secret says
// what is expected instead of "did not match any variant". Error messages
// never include the value.
impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SecretSource;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretSource, E> {
                Ok(SecretSource::Inline(v.to_string()))
            }

            // An unquoted numeric key is still a key.
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SecretSource, E> {
                Ok(SecretSource::Inline(v.to_string()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretSource, A::Error> {
                let bad = || de::Error::custom(format!("expected {EXPECTED}"));
                let Some(kind) = map.next_key::<String>()? else { return Err(bad()) };
                let value: String = map.next_value().map_err(|_: A::Error| bad())?;
                if map.next_key::<String>()?.is_some() {
                    return Err(bad());
                }
                match kind.as_str() {
                    "env" => Ok(SecretSource::Env { env: value }),
                    "file" => Ok(SecretSource::File { file: value.into() }),
                    _ => Err(de::Error::custom(format!("unknown secret source `{kind}`, expected {EXPECTED}"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Why a secret could not be read. Never carries the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set (expected {{ env: NAME }} to name a set, non-empty variable)")]
    EnvUnset(String),
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the secret is empty (expected a non-empty value)")]
    Empty,
    #[error("the secret contains characters that cannot go in an HTTP header (expected visible ASCII)")]
    NotHeaderSafe,
}

impl SecretSource {
    pub fn is_inline(&self) -> bool {
        matches!(self, SecretSource::Inline(_))
    }

    /// Reads the secret. Relative files are taken from `base_dir` (the config's folder).
    pub fn resolve(&self, base_dir: &Path) -> Result<Secret, SecretError> {
        let value = match self {
            SecretSource::Env { env } => match std::env::var(env) {
                Ok(v) if !v.is_empty() => v,
                _ => return Err(SecretError::EnvUnset(env.clone())),
            },
            SecretSource::File { file } => {
                let path = base_dir.join(file);
                let text = std::fs::read_to_string(&path).map_err(|source| SecretError::File { path, source })?;
                // Secret files (Kubernetes, Docker) usually end with a newline.
                text.trim_end_matches(['\n', '\r']).to_string()
            }
            SecretSource::Inline(v) => v.clone(),
        };
        if value.is_empty() {
            return Err(SecretError::Empty);
        }
        if !is_header_safe(&value) {
            return Err(SecretError::NotHeaderSafe);
        }
        Ok(Secret::new(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_mask_never_show_the_value() {
        let s = Secret::new("sk_live_0123456789abcdef");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(s.masked(), "••••cdef");
        assert_eq!(Secret::new("short").masked(), "••••");
        let inline = SecretSource::Inline("sk_live_0123456789abcdef".into());
        assert!(!format!("{inline:?}").contains("sk_live"));
    }

    #[test]
    fn file_secret_is_trimmed_and_env_must_be_set() {
        let dir = std::env::temp_dir().join(format!("pgw-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("k"), "abc-key\n").unwrap();
        let s = SecretSource::File { file: "k".into() }.resolve(&dir).unwrap();
        assert_eq!(s.expose_secret(), "abc-key");
        let err = SecretSource::Env { env: "PGW_SURELY_UNSET_VAR".into() }.resolve(&dir).unwrap_err();
        assert!(err.to_string().contains("PGW_SURELY_UNSET_VAR is not set"));
        let err = SecretSource::Inline("a b".into()).resolve(&dir).unwrap_err();
        assert!(matches!(err, SecretError::NotHeaderSafe));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
