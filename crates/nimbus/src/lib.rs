//! Nimbus: a self-hosted serverless compute platform that speaks AWS Lambda's protocols.
//!
//! Module map (a request's path through the server, top to bottom):
//!
//! - [`api`] — the control-plane HTTP API (Lambda REST 2015-03-31, a CloudWatch Logs
//!   subset), SigV4 via [`auth`]; parses requests into domain types, renders AWS shapes.
//! - [`store`] — function metadata (SQLite) and content-addressed code packages.
//! - [`invoke`] — the invocation lifecycle: admission, lease, deliver, await, bill.
//! - [`pool`] — execution environments per function version: warm reuse, reaping.
//! - [`queue`] — durable asynchronous invocation: event queue, retries, destinations.
//! - [`sandbox`] — backends that start environments (`process`; `jail` on Linux).
//! - [`runtime_api`] — Runtime API 2018-06-01, one listener per environment.
//! - [`runtimes`] — the runtime catalog and our embedded Python / Node bootstraps.
//! - [`logs`] — per-environment log streams, START / END / REPORT lines.
//! - [`model`] — validated names, ARNs, limits, the stored function configuration.
//! - [`config`] — server configuration from flags, environment and file.
//! - [`cli`] — the `nimbus` command line, one file per verb.

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod invoke;
pub mod logs;
pub mod model;
pub mod pool;
pub mod queue;
pub mod runtime_api;
pub mod runtimes;
pub mod sandbox;
pub mod store;
#[cfg(test)]
mod test_support;
pub mod workers;
