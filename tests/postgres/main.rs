//! The tests against a real PostgreSQL server (Debian's, started per test
//! by `support::postgres`): the shared store and replicas. A binary of their
//! own, as before the merge: they time refreshes and restarts on two
//! cores, so they run beside each other only, not beside the browser and
//! streaming tests of `tests/it`.

#[path = "../it/support/mod.rs"]
mod support;

mod installs;
mod replicas;
mod store_postgres;
