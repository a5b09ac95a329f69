//! The request's path: `stack.rs` assembles the steps (`steps/`, one file
//! each, in the order a request travels) over the routing table
//! (`routes.rs`). From the tenant step on a request is a `context::Routed`.
//! `explain.rs` runs the same steps as a dry run.

pub mod context;
pub mod explain;
pub mod routes;
pub mod stack;
pub mod steps;
