//! Integrated and standalone API keys: HTTP Basic with the key as username and
//! an empty password, as Pleo documents it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::HeaderValue;

use crate::secret::Secret;

/// `Basic base64(key + ":")`, marked sensitive (hyper's HPACK never indexes it,
/// and `Debug` hides it).
pub fn basic(key: &Secret) -> HeaderValue {
    let mut raw = String::with_capacity(key.expose_secret().len() + 1);
    raw.push_str(key.expose_secret());
    raw.push(':');
    let mut value = HeaderValue::try_from(format!("Basic {}", STANDARD.encode(raw)))
        .expect("base64 output is a valid header value");
    value.set_sensitive(true);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_username_with_empty_password() {
        let v = basic(&Secret::new("pk_test_123"));
        assert_eq!(v.to_str().unwrap(), "Basic cGtfdGVzdF8xMjM6");
        assert!(v.is_sensitive());
    }
}
