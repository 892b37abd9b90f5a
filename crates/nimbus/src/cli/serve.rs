//! `nimbus serve`: opens the data directory, resolves credentials, starts the API.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::api::{self, AppState};
use crate::auth::{Credentials, KeyStore};
use crate::config::{CpuLimit, IdlePollMode, SandboxKind, ServerConfig};
use crate::invoke::idle_poll::{self, IdlePoll};
use crate::invoke::{Invoker, InvokerConfig};
use crate::logs::LogStore;
use crate::runtimes::Catalog;
use crate::sandbox::Sandbox;
use crate::store::Store;

/// The server's idle-polling request (decision 0011), if `mode` and the machine call for it.
fn start_idle_poll(mode: IdlePollMode) -> Option<IdlePoll> {
    let idle = nimbus_sys::cpuidle::CpuIdle::read()
        .map_or_else(|| "no cpuidle".to_string(), |i| i.to_string());
    if !idle_poll::wanted(mode) {
        tracing::debug!("idle polling off ({idle})");
        return None;
    }
    let started = nimbus_sys::cpuidle::CpuLatencyRequest::open()
        .and_then(|request| IdlePoll::start(request, idle_poll::LINGER));
    match started {
        Ok(poll) => {
            tracing::info!(
                "idle CPUs poll around invocations ({idle}; --idle-poll off lets them halt)"
            );
            Some(poll)
        }
        Err(e) => {
            let msg = format!(
                "idle polling unavailable ({idle}): cannot request it through \
                 /dev/cpu_dma_latency: {e}"
            );
            if mode == IdlePollMode::On {
                tracing::warn!("{msg}");
            } else {
                tracing::info!("{msg}");
            }
            None
        }
    }
}

pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let store = Arc::new(
        Store::open(&config.data_dir)
            .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?,
    );
    let account_id = match &config.account_id {
        Some(a) => a.clone(),
        None => match store.meta_get("account_id")? {
            Some(a) => a,
            None => {
                let a = random_digits(12);
                store.meta_set("account_id", &a)?;
                a
            }
        },
    };
    let mut keys: Vec<Credentials> = config
        .access_keys
        .iter()
        .cloned()
        .map(|mut k| {
            if k.account_id.is_empty() {
                k.account_id = account_id.clone();
            }
            k
        })
        .collect();
    let generated = keys.is_empty();
    if generated {
        keys.push(generated_key(&store, &account_id)?);
    }
    write_client_files(&config.data_dir, &keys[0], &config.region)?;

    let url_key = match store.meta_get("url_key")? {
        Some(k) => hex::decode(k).unwrap_or_default(),
        None => {
            let k = random_hex(32);
            store.meta_set("url_key", &k)?;
            hex::decode(k).unwrap_or_default()
        }
    };

    let catalog = Catalog::install(&config.data_dir, &config.runtimes)
        .context("cannot install the runtime bootstraps")?;
    let sandbox: Arc<dyn Sandbox> = match config.sandbox {
        SandboxKind::Process => {
            tracing::warn!(
                "sandbox 'process': functions run as plain processes with NO isolation. Development only."
            );
            Arc::new(crate::sandbox::process::ProcessSandbox)
        }
        SandboxKind::Jail => Arc::new(
            crate::sandbox::jail::JailSandbox::new(crate::sandbox::jail::JailConfig {
                cpu_quota: config.cpu_limit == CpuLimit::Quota,
                python_zygote: config.python_zygote,
                ..crate::sandbox::jail::JailConfig::new(&config.data_dir)
            })
            .context(
                "cannot start the jail sandbox (isolated execution environments); \
                 --sandbox process runs functions without isolation, for development only",
            )?,
        ),
    };
    sandbox.sweep_leftovers();
    let logs = LogStore::open(config.data_dir.join("logs")).context("cannot open the log store")?;
    let mut invoker = Invoker::new(
        InvokerConfig {
            region: config.region.clone(),
            concurrency_limit: config.concurrency_limit,
            keep_alive: config.keep_alive,
        },
        catalog,
        sandbox.clone(),
        logs.clone(),
        config.data_dir.join("code"),
    );
    if let Some(idle_poll) = start_idle_poll(config.idle_poll) {
        invoker = invoker.with_idle_poll(idle_poll);
    }
    let invoker = Arc::new(invoker);
    let queue = crate::queue::EventQueue::open(
        &config.data_dir,
        crate::queue::QueueConfig::from_env(&config.region, config.concurrency_limit)?,
        Arc::new(crate::queue::LocalPlatform {
            store: store.clone(),
            invoker: invoker.clone(),
        }),
    )
    .context("cannot open the event queue")?;
    let state = Arc::new(AppState {
        store,
        invoker: invoker.clone(),
        keys: KeyStore::new(keys.clone()),
        logs,
        region: config.region.clone(),
        url_key,
        reconcile_now: tokio::sync::Notify::new(),
        queue: queue.clone(),
    });
    for e in state.store.all_entries() {
        if e.reserved.is_some() {
            crate::api::concurrency::apply_reserved(
                &state,
                &e.latest.account,
                &e.latest.name,
                e.reserved,
            );
        }
    }

    // Requests are served by one current-thread runtime per CPU (decision 0009).
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let workers = crate::workers::install(
        crate::workers::Workers::start(cpus).context("cannot start the worker threads")?,
    );

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    announce(&config, addr, generated, &keys[0], sandbox.name());

    let reaper = {
        let invoker = invoker.clone();
        let period =
            (config.keep_alive / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                invoker.reap();
            }
        })
    };
    // Keeps provisioned environments at their targets, replacing any that died.
    let reconciler = {
        let state = state.clone();
        tokio::spawn(async move {
            loop {
                let targets = crate::api::concurrency::provisioned_targets(&state);
                state.invoker.reconcile_provisioned(targets).await;
                tokio::select! {
                    _ = state.reconcile_now.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        })
    };
    let dispatcher = queue.start();
    api::serve(listener, state, shutdown_signal()).await;
    dispatcher.abort();
    reconciler.abort();
    reaper.abort();
    workers.shutdown();
    invoker.shutdown();
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn announce(
    config: &ServerConfig,
    addr: std::net::SocketAddr,
    generated: bool,
    key: &Credentials,
    sandbox: &str,
) {
    let dir = config.data_dir.display();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "Nimbus listening on http://{addr} (region {}, account {}, sandbox {sandbox}, data {dir})",
        config.region, key.account_id
    );
    if generated {
        let _ = writeln!(
            err,
            "Generated an access key for this server; it is in {dir}/credentials. Use it with:\n  \
             export AWS_SHARED_CREDENTIALS_FILE={dir}/credentials AWS_CONFIG_FILE={dir}/config\n  \
             aws --endpoint-url http://{addr} lambda list-functions"
        );
    }
}

/// A key generated on the first start and kept in the store, so restarts keep it.
fn generated_key(store: &Store, account_id: &str) -> anyhow::Result<Credentials> {
    if let (Some(ak), Some(sk)) = (
        store.meta_get("generated_access_key_id")?,
        store.meta_get("generated_secret_access_key")?,
    ) {
        return Ok(Credentials {
            access_key_id: ak,
            secret_access_key: sk,
            account_id: account_id.to_string(),
        });
    }
    let ak = format!("NIMB{}", random_upper(16));
    let sk = random_alnum(40);
    store.meta_set("generated_access_key_id", &ak)?;
    store.meta_set("generated_secret_access_key", &sk)?;
    Ok(Credentials {
        access_key_id: ak,
        secret_access_key: sk,
        account_id: account_id.to_string(),
    })
}

/// `DIR/credentials` (AWS shared-credentials format) and `DIR/config` (region), so
/// `AWS_SHARED_CREDENTIALS_FILE=DIR/credentials aws ...` just works.
fn write_client_files(dir: &Path, key: &Credentials, region: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let write = |name: &str, text: String| -> anyhow::Result<()> {
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
        Ok(())
    };
    write(
        "credentials",
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            key.access_key_id, key.secret_access_key
        ),
    )?;
    write("config", format!("[default]\nregion = {region}\n"))
}

/// Secrets come from the OS's CSPRNG (uuid v4 draws from getrandom), never from a seeded PRNG.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 16);
    while out.len() < n {
        out.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    out.truncate(n);
    out
}

fn random_from(alphabet: &[u8], n: usize) -> String {
    // 256 is a multiple of 32 and of 10 is not: rejection keeps the digits uniform.
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in random_bytes(n) {
            let limit = 256 - 256 % alphabet.len();
            if (b as usize) < limit && out.len() < n {
                out.push(alphabet[b as usize % alphabet.len()] as char);
            }
        }
    }
    out
}

fn random_digits(n: usize) -> String {
    let mut s = random_from(b"0123456789", n);
    if s.starts_with('0') {
        s.replace_range(0..1, "1");
    }
    s
}

fn random_upper(n: usize) -> String {
    random_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", n)
}

fn random_alnum(n: usize) -> String {
    random_from(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        n,
    )
}

fn random_hex(bytes: usize) -> String {
    hex::encode(random_bytes(bytes))
}
