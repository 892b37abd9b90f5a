//! The five measurements of issue 5 and issue 6's durable enqueue, one file each, in the order a run performs them. Each
//! takes the server(s) and sizes it needs, returns a serialisable result, and leaves no
//! function or environment of its own behind on a server it did not start.

pub(crate) mod closed_loop;
pub(crate) mod cold;
pub(crate) mod density;
pub(crate) mod enqueue;
pub(crate) mod scale;
pub(crate) mod throughput;
pub(crate) mod warm;
