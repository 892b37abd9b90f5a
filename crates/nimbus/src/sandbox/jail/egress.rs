//! Outbound networking on first use (docs/decisions/0012-outbound-network-on-first-use.md).
//!
//! A networked function's jail starts with only `lo`; its runtime runs under the egress
//! trigger, which holds every `connect`/`sendto`/`sendmsg`/`sendmmsg` that names a
//! destination until the server answers (`nimbus_sys::seccomp_notify`). One task per
//! environment serves the trigger's listener: the first held call to an address outside the
//! jail attaches slirp4netns to the jail's network namespace (~20 ms, off the async
//! threads), and every held call is then let through unchanged. An environment that never
//! sends outside (most of a burst of cold starts, a function that only computes) never
//! costs a slirp4netns process: ~4–5 ms of CPU per environment on our machines.
//!
//! The task ends when the listener hangs up, which the kernel does once no process of the
//! environment is left.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use nimbus_sys::egress::EgressConfig;
use nimbus_sys::seccomp_notify::Listener;

use super::JailedEnv;

/// Serves one environment's trigger until the environment is gone. Must be spawned on the
/// tokio runtime as soon as the listener arrives: a held call waits for it.
pub(super) async fn serve(listener: OwnedFd, env: Arc<JailedEnv>, config: EgressConfig) {
    let listener = match Listener::new(listener) {
        Ok(l) => l,
        Err(e) => {
            // Unreachable in practice (epoll takes any listener). The listener is closed, so a
            // held call now fails (ENOSYS) and later ones are not held: attach for them.
            tracing::warn!("jail: cannot watch the egress trigger ({e}); attaching egress now");
            attach(&env, &config).await;
            return;
        }
    };
    let mut attached = false;
    while let Some(held) = listener.next().await {
        if !attached && listener.wants_the_outside(&held) {
            attach(&env, &config).await;
            // Once, whatever the outcome: a failed attach leaves the call to fail as it
            // would without a network, rather than retrying on every call.
            attached = true;
        }
        // An error only means the caller went away meanwhile: nothing to answer.
        let _ = listener.let_through(held.id);
    }
}

async fn attach(env: &Arc<JailedEnv>, config: &EgressConfig) {
    let (env, config) = (env.clone(), config.clone());
    match tokio::task::spawn_blocking(move || env.process.attach_egress(&config)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("jail: cannot attach outbound networking: {e}"),
        Err(e) => tracing::warn!("jail: cannot attach outbound networking: {e}"),
    }
}
