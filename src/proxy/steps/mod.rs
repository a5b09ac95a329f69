//! The request's path, one step per file, in the order a request travels
//! (`stack.rs` assembles them): 1 observe, 2 rescue, 3 admit, 4 legacy,
//! 5 guard, 6 client_auth, 7 tenant, 8 record, 9 shares (in `admit`),
//! 10 scrub, 11 attach, 12 proxy.
//! Steps stand on the layers below them (routes, credential, clients,
//! upstream, body, metrics, config); nothing below imports a step.

pub mod admit;
pub mod attach;
pub mod client_auth;
pub mod guard;
pub mod legacy;
pub mod observe;
pub mod proxy;
pub mod record;
pub mod rescue;
pub mod scrub;
pub mod tenant;
