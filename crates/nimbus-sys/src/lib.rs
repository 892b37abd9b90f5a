//! Kernel-facing primitives for the jail sandbox (filled in by the jail work).
