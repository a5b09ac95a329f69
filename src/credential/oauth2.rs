//! OAuth 2.0 bearer tokens. Tokens are opaque: sent as given.

use http::HeaderValue;

use crate::secret::Secret;

/// `Bearer <token>`, marked sensitive. Secrets are checked to be visible ASCII
/// when read, so this cannot fail.
pub fn bearer(token: &Secret) -> HeaderValue {
    let mut value = HeaderValue::try_from(format!("Bearer {}", token.expose_secret()))
        .expect("secrets are validated as header-safe when loaded");
    value.set_sensitive(true);
    value
}
