//! The `nimbus` command line: one file per verb.

pub mod client;
pub mod delete;
pub mod deploy;
pub mod invoke;
pub mod list;
pub mod logs;
pub mod serve;
