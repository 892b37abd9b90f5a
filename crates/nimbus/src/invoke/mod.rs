//! The invocation lifecycle: admit against concurrency limits, lease (or start) an
//! environment, deliver the event, await the response, an error, a crash or the deadline,
//! write START / END / REPORT, return the environment or destroy it.
//!
//! Nothing here speaks HTTP: the API layer turns requests into [`InvokeRequest`]s and
//! [`InvokeResult`]s into responses.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::header::HeaderValue;
use tokio::sync::{oneshot, watch};

use crate::logs::{LogStore, Report, tail};
use crate::model::time::{iso8601_z, log_stream_date, now_ms};
use crate::model::{FunctionConfig, limits};
use crate::pool::{Environment, Pool, PoolKey, Pools};
use crate::runtime_api::{InitEvent, Invocation, Reply, RuntimeApi};
use crate::runtimes::{Catalog, RuntimeKind};
use crate::sandbox::{EnvSpec, Sandbox, SandboxError};

pub mod concurrency;
pub mod idle_poll;
pub mod usage;

use concurrency::{Concurrency, Throttle};

/// How long an invocation runs before its START line is written on its own. Quicker ones
/// write START, END and REPORT together (one write, and no wake-up of the log writer while
/// the function runs); slower ones show their start to log readers (`logs --follow`) after
/// this long.
const START_VISIBLE_AFTER: Duration = Duration::from_millis(10);

/// One invocation to run.
pub struct InvokeRequest {
    pub function: Arc<FunctionConfig>,
    /// The ARN the caller used (qualified when a qualifier was given).
    pub invoked_arn: Arc<str>,
    pub request_id: Arc<str>,
    pub payload: Bytes,
    /// Already base64-decoded JSON text.
    pub client_context: Option<String>,
    pub want_log_tail: bool,
}

/// How it went, when it ran (function errors included).
#[derive(Debug)]
pub struct InvokeResult {
    pub payload: Bytes,
    pub content_type: Option<HeaderValue>,
    /// `X-Amz-Function-Error: Unhandled`.
    pub function_error: bool,
    pub executed_version: String,
    /// The last 4 KB of the invocation's log, when asked for.
    pub log_tail: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("Rate Exceeded.")]
    Throttled { reason: &'static str },
    /// The function scales out faster than Lambda's documented rate allows.
    #[error("Rate Exceeded.")]
    ScalingThrottled,
    #[error("{0}")]
    Sandbox(#[from] SandboxError),
    #[error("the runtime {0} is not available on this server")]
    UnknownRuntime(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Server-wide settings of the invoker.
#[derive(Debug, Clone)]
pub struct InvokerConfig {
    pub region: String,
    pub concurrency_limit: u32,
    pub keep_alive: Duration,
}

/// The invocation engine: the one owner of pools and the concurrency count.
pub struct Invoker {
    config: InvokerConfig,
    catalog: Catalog,
    sandbox: Arc<dyn Sandbox>,
    logs: LogStore,
    code_root: std::path::PathBuf,
    pools: Pools,
    pub concurrency: Concurrency,
    pub usage: usage::Usage,
    provisioned: Mutex<HashMap<ProvisionedKey, ProvisionedState>>,
    /// Idle CPUs poll around invocations (decision 0011); `None`: they idle as they will.
    idle_poll: Option<idle_poll::IdlePoll>,
    /// Poll only while fewer invocations than this run (the CPUs): beyond, CPUs are rarely
    /// idle, and on a shared host a polling vCPU spends host time the busy one needs.
    idle_poll_below: u32,
}

/// A provisioned-concurrency configuration: function, qualifier.
pub type ProvisionedKey = (String, String, String);

/// Where a provisioned-concurrency configuration stands.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProvisionedState {
    pub allocated: u32,
    /// Why the last initialisation failed, if it did.
    pub failure: Option<String>,
}

/// One provisioned-concurrency configuration to keep satisfied.
pub struct ProvisionedTarget {
    pub key: ProvisionedKey,
    /// The version it resolves to.
    pub config: Arc<FunctionConfig>,
    pub requested: u32,
}

/// The end of an invocation, before it is turned into a result.
enum Outcome {
    Reply(Reply),
    Timeout,
    Exited(String),
}

impl Invoker {
    pub fn new(
        config: InvokerConfig,
        catalog: Catalog,
        sandbox: Arc<dyn Sandbox>,
        logs: LogStore,
        code_root: std::path::PathBuf,
    ) -> Self {
        Invoker {
            catalog,
            sandbox,
            logs,
            code_root,
            pools: Pools::default(),
            concurrency: Concurrency::new(config.concurrency_limit),
            usage: usage::Usage::default(),
            provisioned: Mutex::new(HashMap::new()),
            idle_poll: None,
            idle_poll_below: 0,
            config,
        }
    }

    /// Asks idle CPUs to poll around invocations.
    pub fn with_idle_poll(mut self, idle_poll: idle_poll::IdlePoll) -> Self {
        self.idle_poll = Some(idle_poll);
        self.idle_poll_below = std::thread::available_parallelism()
            .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX));
        self
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn config(&self) -> &InvokerConfig {
        &self.config
    }

    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    pub fn in_flight(&self) -> u32 {
        self.concurrency.in_flight()
    }

    /// Destroys every idle environment of a function (it was deleted).
    pub fn retire_function(&self, account: &str, name: &str) {
        drop(self.pools.retire_function(account, name));
        if let Ok(mut p) = self.provisioned.lock() {
            p.retain(|(a, n, _), _| !(a == account && n == name));
        }
    }

    /// Destroys the idle environments of one version (it was updated or deleted).
    pub fn retire_version(&self, account: &str, name: &str, version: &str) {
        drop(self.pools.retire_version(account, name, version));
    }

    /// Keeps provisioned environments at their targets: starts missing ones (replacing any
    /// that died), destroys surplus ones. Called periodically with the stored configurations.
    pub async fn reconcile_provisioned(self: &Arc<Self>, targets: Vec<ProvisionedTarget>) {
        let mut wanted: HashMap<PoolKey, usize> = HashMap::new();
        for t in &targets {
            let key = pool_key(&t.config);
            *wanted.entry(key).or_default() += t.requested as usize;
        }
        for pool in self.pools.all() {
            let target = wanted.get(&pool.key).copied().unwrap_or(0);
            drop(pool.shrink_provisioned(target));
        }
        let mut states = HashMap::new();
        for t in targets {
            let pool = self.pools.get(&pool_key(&t.config));
            let (have, starting) = pool.provisioned_count();
            let want = wanted.get(&pool.key).copied().unwrap_or(0);
            let missing = want.saturating_sub(have + starting);
            let previous = self
                .provisioned
                .lock()
                .ok()
                .and_then(|m| m.get(&t.key).cloned())
                .unwrap_or_default();
            // A failed configuration is retried, but not more than once per reconcile pass.
            for _ in 0..missing {
                pool.provisioning.fetch_add(1, Ordering::AcqRel);
                let me = self.clone();
                let pool = pool.clone();
                let config = t.config.clone();
                let key = t.key.clone();
                // On a worker, as on-demand environments, so invocations stay on one thread.
                crate::workers::spawn(async move {
                    let r = me.start_environment(&config, "", true).await;
                    pool.provisioning.fetch_sub(1, Ordering::AcqRel);
                    match r {
                        Ok(Started::Ready(mut env)) => {
                            env.init_duration = None;
                            env.provisioned = true;
                            pool.add_provisioned(env);
                        }
                        Ok(Started::Failed { payload, .. }) => {
                            let reason = format!(
                                "FUNCTION_ERROR_INIT_FAILURE: {}",
                                String::from_utf8_lossy(&payload)
                            );
                            me.set_provisioned_failure(&key, reason);
                        }
                        Err(e) => me.set_provisioned_failure(&key, e.to_string()),
                    }
                });
            }
            let (have, _) = pool.provisioned_count();
            states.insert(
                t.key,
                ProvisionedState {
                    allocated: (have.min(t.requested as usize)) as u32,
                    failure: previous.failure.filter(|_| have < t.requested as usize),
                },
            );
        }
        if let Ok(mut m) = self.provisioned.lock() {
            *m = states;
        }
    }

    fn set_provisioned_failure(&self, key: &ProvisionedKey, reason: String) {
        if let Ok(mut m) = self.provisioned.lock() {
            m.entry(key.clone()).or_default().failure = Some(reason);
        }
    }

    /// The state of a provisioned-concurrency configuration (as of the last reconcile).
    pub fn provisioned_state(&self, key: &ProvisionedKey) -> ProvisionedState {
        self.provisioned
            .lock()
            .ok()
            .and_then(|m| m.get(key).cloned())
            .unwrap_or_default()
    }

    /// Destroys every idle environment (server shutdown); busy ones end with their invocation.
    pub fn shutdown(&self) {
        drop(self.pools.retire_all());
    }

    /// Reaps idle environments past the keep-alive. Called periodically by the server.
    pub fn reap(&self) {
        drop(self.pools.reap(Instant::now(), self.config.keep_alive));
    }

    /// Runs one invocation to its end — in its own task, so a caller that goes away (a
    /// client that disconnects) cannot abandon a leased environment halfway, and a panic
    /// stays inside that task.
    pub async fn invoke(self: &Arc<Self>, req: InvokeRequest) -> Result<InvokeResult, InvokeError> {
        self.touch_idle_poll();
        let me = self.clone();
        let result = tokio::spawn(async move { me.invoke_to_end(req).await })
            .await
            .map_err(|e| InvokeError::Internal(format!("invocation task failed: {e}")))?;
        // Polling lingers from here, covering the answer's way back to the client.
        self.touch_idle_poll();
        result
    }

    /// Called before admission and after release: `in_flight` counts the others.
    fn touch_idle_poll(&self) {
        if let Some(p) = &self.idle_poll
            && self.in_flight() < self.idle_poll_below
        {
            p.touch();
        }
    }

    async fn invoke_to_end(
        self: &Arc<Self>,
        req: InvokeRequest,
    ) -> Result<InvokeResult, InvokeError> {
        let f = &req.function;
        let counters = self.concurrency.function(&f.account, &f.name);
        let _permit = self.concurrency.admit(&counters).map_err(|t| {
            self.usage.record_throttle(&f.account, &f.name);
            InvokeError::Throttled {
                reason: match t {
                    Throttle::Account => Throttle::Account.reason(),
                    Throttle::Reserved => Throttle::Reserved.reason(),
                },
            }
        })?;
        let pool = self.pools.get(&pool_key(f));
        // The worker this invocation runs on (decision 0009), `None` off the workers.
        let here = crate::workers::current();
        let env = loop {
            match pool.lease_idle(|e| here.is_some() && e.home == here) {
                // An idle environment can have died (killed from outside); never hand it out.
                Some(env) if env.has_exited() => pool.discard(env),
                Some(env) => break Some(env),
                None => break None,
            }
        };
        let env = match env {
            Some(env) => env,
            None => {
                if !pool.try_scale(Instant::now()) {
                    self.usage.record_throttle(&f.account, &f.name);
                    return Err(InvokeError::ScalingThrottled);
                }
                pool.lease_new();
                match self.start_environment(f, &req.request_id, false).await {
                    Ok(Started::Ready(env)) => env,
                    Ok(Started::Failed { env, payload }) => {
                        let result = self.fail_init(&req, env, payload).await;
                        pool.forget_lease();
                        return Ok(result);
                    }
                    Err(e) => {
                        pool.forget_lease();
                        return match e {
                            InvokeError::Sandbox(SandboxError::Spawn(io))
                                if self.runtime_kind(f) == Some(RuntimeKind::Provided) =>
                            {
                                Ok(entrypoint_error(&req, &io))
                            }
                            e => Err(e),
                        };
                    }
                }
            }
        };
        // An environment of another worker: run the invocation there, next to its Runtime
        // API and log writer, so it crosses threads twice (there and back) rather than at
        // every step (decision 0009).
        if let (Some(home), Some(workers)) = (env.home, crate::workers::get())
            && here.is_some()
            && here != Some(home)
        {
            let (tx, rx) = oneshot::channel();
            let me = self.clone();
            let mut transit = InTransit {
                pool,
                env: Some(env),
            };
            workers.spawn_on(home, move || async move {
                if let Some(env) = transit.env.take() {
                    let _ = tx.send(me.run_on(&transit.pool, env, req).await);
                }
            });
            return rx.await.map_err(|_| {
                InvokeError::Internal("the invocation's worker stopped (shutdown)".into())
            });
        }
        Ok(self.run_on(&pool, env, req).await)
    }

    fn runtime_kind(&self, f: &FunctionConfig) -> Option<RuntimeKind> {
        self.catalog.get(&f.runtime).map(|r| r.kind)
    }

    async fn run_on(&self, pool: &Pool, mut env: Environment, req: InvokeRequest) -> InvokeResult {
        let f = &req.function;
        let timeout = Duration::from_secs(u64::from(f.timeout));
        let (reply_tx, reply_rx) = oneshot::channel();
        env.logs.start(format!(
            "START RequestId: {} Version: {}",
            req.request_id, f.version
        ));
        let started = Instant::now();
        let deadline_ms = now_ms() + timeout.as_millis() as u64;
        let invocation = Invocation {
            request_id: req.request_id.clone(),
            payload: req.payload.clone(),
            deadline_ms,
            invoked_arn: req.invoked_arn.clone(),
            client_context: req.client_context.clone(),
            cognito_identity: None,
            trace_id: None,
            reply: reply_tx,
        };
        let outcome = if env.invocations.send(invocation).await.is_err() {
            Outcome::Exited(wait_exit(&mut env.exit).await)
        } else {
            let mut exit = env.exit.clone();
            let mut reply_rx = reply_rx;
            // One timer: first until START must be visible, then until the deadline.
            let mut start_written = false;
            let sleep = tokio::time::sleep(START_VISIBLE_AFTER.min(timeout));
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    biased;
                    reply = &mut reply_rx => break match reply {
                        Ok(r) => Outcome::Reply(r),
                        Err(_) => Outcome::Exited(wait_exit(&mut exit).await),
                    },
                    desc = wait_exit(&mut exit) => break Outcome::Exited(desc),
                    _ = &mut sleep => {
                        if start_written || timeout <= START_VISIBLE_AFTER {
                            break Outcome::Timeout;
                        }
                        env.logs.flush_start();
                        start_written = true;
                        sleep.as_mut().reset(tokio::time::Instant::from_std(started + timeout));
                    }
                }
            }
        };
        let elapsed = started.elapsed();
        let init = env.init_duration.take();
        let id = &req.request_id;
        let (payload, content_type, function_error, status, healthy) = match outcome {
            Outcome::Reply(Reply::Response { body, content_type }) => {
                (body, content_type, false, None, true)
            }
            Outcome::Reply(Reply::Error { body, .. }) => (body, None, true, None, true),
            // The runtime's connection was cut mid-body: the environment is not reused.
            Outcome::Reply(Reply::TooLarge { size }) => (
                error_json(
                    "Function.ResponseSizeTooLarge",
                    &format!(
                        "Response payload size ({size} bytes) exceeded maximum allowed payload size ({} bytes).",
                        limits::SYNC_PAYLOAD_MAX
                    ),
                ),
                None,
                true,
                None,
                false,
            ),
            Outcome::Timeout => (
                error_json(
                    "Sandbox.Timedout",
                    &format!(
                        "RequestId: {id} Error: Task timed out after {}.00 seconds",
                        f.timeout
                    ),
                ),
                None,
                true,
                Some("timeout"),
                false,
            ),
            Outcome::Exited(desc) => (
                exit_error(id, &desc),
                None,
                true,
                Some("error\tError Type: Runtime.ExitError"),
                false,
            ),
        };
        let mut lines = Vec::with_capacity(3);
        if status == Some("timeout") {
            lines.push(format!(
                "{} {id} Task timed out after {}.00 seconds",
                iso8601_z(now_ms()),
                f.timeout
            ));
        }
        lines.push(format!("END RequestId: {id}"));
        // The log task writes REPORT, reading Max Memory Used there: off the caller's path.
        let report = Report {
            request_id: id.clone(),
            duration: elapsed,
            memory_mb: f.memory_size,
            init,
            status: status.map(str::to_string),
            process: env.process.clone(),
        };
        self.usage
            .record(&f.account, &f.name, elapsed, f.memory_size, function_error);
        let text = env
            .logs
            .finish(lines, Some(report), req.want_log_tail)
            .await;
        match (healthy && !env.has_exited(), env.provisioned) {
            (true, true) => pool.release_provisioned(env),
            (true, false) => pool.release(env, Instant::now()),
            (false, _) => discard_leased(pool, env),
        }
        InvokeResult {
            payload,
            content_type,
            function_error,
            executed_version: f.version.clone(),
            log_tail: text.map(|t| tail(&t, limits::LOG_TAIL_BYTES).to_string()),
        }
    }

    /// Reports an init failure to the invoker, writes its log lines and destroys the
    /// environment: the next invocation runs init again.
    async fn fail_init(
        &self,
        req: &InvokeRequest,
        env: Environment,
        payload: Bytes,
    ) -> InvokeResult {
        let f = &req.function;
        let id = &req.request_id;
        env.logs
            .start(format!("START RequestId: {id} Version: {}", f.version));
        let error_type = serde_json::from_slice::<serde_json::Value>(&payload)
            .ok()
            .and_then(|v| v.get("errorType")?.as_str().map(str::to_string))
            .unwrap_or_else(|| "Runtime.Unknown".into());
        let report = Report {
            request_id: id.clone(),
            duration: Duration::ZERO,
            memory_mb: f.memory_size,
            init: env.init_duration,
            status: Some(format!("error\tError Type: {error_type}")),
            process: env.process.clone(),
        };
        self.usage
            .record(&f.account, &f.name, Duration::ZERO, f.memory_size, true);
        let text = env
            .logs
            .finish(
                vec![format!("END RequestId: {id}")],
                Some(report),
                req.want_log_tail,
            )
            .await;
        drop(env);
        InvokeResult {
            payload,
            content_type: None,
            function_error: true,
            executed_version: f.version.clone(),
            log_tail: text.map(|t| tail(&t, limits::LOG_TAIL_BYTES).to_string()),
        }
    }

    /// Starts an environment and waits for its init to end.
    async fn start_environment(
        &self,
        f: &FunctionConfig,
        request_id: &str,
        provisioned: bool,
    ) -> Result<Started, InvokeError> {
        let runtime = self
            .catalog
            .get(&f.runtime)
            .ok_or_else(|| InvokeError::UnknownRuntime(f.runtime.clone()))?;
        let env_id = uuid::Uuid::new_v4().simple().to_string();
        let log_group = format!("/aws/lambda/{}", f.name);
        let log_stream = format!("{}/[{}]{}", log_stream_date(now_ms()), f.version, env_id);
        let mut argv = runtime.argv.clone();
        if runtime.kind == RuntimeKind::Node {
            // Node sizes its heap from the host's memory, which the sandbox does not show:
            // without a cap it grows past MemorySize and is killed instead of throwing.
            argv.insert(
                1,
                format!("--max-old-space-size={}", u64::from(f.memory_size) * 9 / 10),
            );
        }
        let spec = EnvSpec {
            env_id: env_id.clone(),
            argv,
            env: environment_variables(
                f,
                runtime,
                &self.config.region,
                &log_group,
                &log_stream,
                provisioned,
            ),
            code_dir: self.code_dir(f),
            runtime_dir: runtime.runtime_dir.clone(),
            opt_dir: None,
            host_paths: runtime.host_paths.clone(),
            memory_mb: f.memory_size,
            ephemeral_mb: f.ephemeral_storage,
            network: f.network,
            cwd: "/var/task".into(),
        };
        let t0 = Instant::now();
        let sandbox = self.sandbox.clone();
        let started = tokio::task::spawn_blocking(move || sandbox.start(&spec))
            .await
            .map_err(|e| InvokeError::Internal(format!("sandbox start panicked: {e}")))??;
        let (api, invocations, mut init_events) = RuntimeApi::new();
        let server = api
            .serve(started.listener)
            .map_err(|e| InvokeError::Internal(format!("Runtime API listener: {e}")))?;
        let logs = self
            .logs
            .start_stream(&f.account, &log_group, &log_stream, started.output)
            .map_err(|e| InvokeError::Internal(format!("log stream: {e}")))?;
        let (exit_tx, exit_rx) = watch::channel(None);
        let process = started.process.clone();
        let exited = started.exited;
        tokio::spawn(async move {
            let desc = exited.await;
            // Removing a cgroup can wait for an RCU grace period: not on a worker's thread.
            let _ = tokio::task::spawn_blocking(move || process.cleanup()).await;
            let _ = exit_tx.send(Some(desc));
        });
        let mut env = Environment {
            id: env_id,
            log_stream,
            invocations,
            process: started.process,
            exit: exit_rx,
            logs,
            init_duration: None,
            provisioned: false,
            server,
            home: crate::workers::current(),
        };
        let mut exit = env.exit.clone();
        let init_limit = Duration::from_secs(limits::INIT_TIMEOUT_S);
        let event = tokio::select! {
            biased;
            ev = init_events.recv() => ev,
            desc = wait_exit(&mut exit) => {
                env.init_duration = Some(t0.elapsed());
                return Ok(Started::Failed { payload: exit_error(request_id, &desc), env });
            }
            _ = tokio::time::sleep(init_limit) => {
                env.init_duration = Some(t0.elapsed());
                env.logs.line(format!(
                    "INIT_REPORT Init Duration: {:.2} ms\tPhase: init\tStatus: timeout",
                    ms(t0.elapsed())
                ));
                return Ok(Started::Failed {
                    payload: error_json(
                        "Sandbox.Timedout",
                        &format!("Init phase timed out after {}.00 seconds", limits::INIT_TIMEOUT_S),
                    ),
                    env,
                });
            }
        };
        env.init_duration = Some(t0.elapsed());
        match event {
            Some(InitEvent::Ready) => {
                env.process.init_done();
                Ok(Started::Ready(env))
            }
            Some(InitEvent::Failed { body, error_type }) => {
                let payload = if serde_json::from_slice::<serde_json::Value>(&body)
                    .is_ok_and(|v| v.get("errorType").is_some())
                {
                    body
                } else {
                    error_json(
                        error_type.as_deref().unwrap_or("Runtime.Unknown"),
                        &String::from_utf8_lossy(&body),
                    )
                };
                Ok(Started::Failed { env, payload })
            }
            None => Err(InvokeError::Internal(
                "Runtime API closed during init".into(),
            )),
        }
    }

    fn code_dir(&self, f: &FunctionConfig) -> std::path::PathBuf {
        self.code_root.join(&f.code_sha256_hex)
    }
}

/// Gives back the lease of an environment that is not to be reused, and destroys it.
fn discard_leased(pool: &Pool, env: Environment) {
    if env.provisioned {
        pool.discard_provisioned(env);
    } else {
        pool.discard(env);
    }
}

/// A leased environment on its way to its home worker. If that worker has stopped (shutdown)
/// and drops the job unrun, the lease is still given back.
struct InTransit {
    pool: Arc<Pool>,
    env: Option<Environment>,
}

impl Drop for InTransit {
    fn drop(&mut self) {
        if let Some(env) = self.env.take() {
            discard_leased(&self.pool, env);
        }
    }
}

fn pool_key(f: &FunctionConfig) -> PoolKey {
    PoolKey {
        account: f.account.clone(),
        function: f.name.clone(),
        version: f.version.clone(),
        revision: f.revision_id.clone(),
    }
}

enum Started {
    Ready(Environment),
    Failed { env: Environment, payload: Bytes },
}

async fn wait_exit(exit: &mut watch::Receiver<Option<String>>) -> String {
    match exit.wait_for(Option::is_some).await {
        Ok(v) => v.clone().unwrap_or_default(),
        // The watcher is gone: the process is gone too.
        Err(_) => "signal: killed".into(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn error_json(error_type: &str, message: &str) -> Bytes {
    Bytes::from(serde_json::json!({"errorType": error_type, "errorMessage": message}).to_string())
}

fn exit_error(request_id: &str, desc: &str) -> Bytes {
    let what = if desc == "exit status 0" {
        "Runtime exited without providing a reason".to_string()
    } else {
        format!("Runtime exited with error: {desc}")
    };
    let message = if request_id.is_empty() {
        format!("Error: {what}")
    } else {
        format!("RequestId: {request_id} Error: {what}")
    };
    error_json("Runtime.ExitError", &message)
}

fn entrypoint_error(req: &InvokeRequest, io: &std::io::Error) -> InvokeResult {
    let message = if io.kind() == std::io::ErrorKind::NotFound {
        format!(
            "RequestId: {} Error: Couldn't find valid bootstrap(s): [/var/task/bootstrap /opt/bootstrap]",
            req.request_id
        )
    } else {
        format!(
            "RequestId: {} Error: fork/exec /var/task/bootstrap: {io}",
            req.request_id
        )
    };
    InvokeResult {
        payload: error_json("Runtime.InvalidEntrypoint", &message),
        content_type: None,
        function_error: true,
        executed_version: req.function.version.clone(),
        log_tail: None,
    }
}

/// The Python runtimes' `PYTHONPATH` unless the function sets its own.
pub const DEFAULT_PYTHONPATH: &str = "/var/runtime";

/// Lambda's `LD_LIBRARY_PATH` for every runtime.
pub const DEFAULT_LD_LIBRARY_PATH: &str =
    "/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib";

/// The runtime process's complete environment (lambda-wire.md §4.1): the user's variables,
/// then the reserved ones, which win. Nothing of the server's own environment.
pub fn environment_variables(
    f: &FunctionConfig,
    runtime: &crate::runtimes::Runtime,
    region: &str,
    log_group: &str,
    log_stream: &str,
    provisioned: bool,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/bin:/usr/bin/:/bin:/opt/bin".into(),
        ),
        ("LANG".into(), "en_US.UTF-8".into()),
        ("TZ".into(), ":UTC".into()),
        ("LD_LIBRARY_PATH".into(), DEFAULT_LD_LIBRARY_PATH.into()),
    ];
    match runtime.kind {
        RuntimeKind::Python => env.push(("PYTHONPATH".into(), DEFAULT_PYTHONPATH.into())),
        RuntimeKind::Node => env.push((
            "NODE_PATH".into(),
            "/opt/nodejs/node20/node_modules:/opt/nodejs/node_modules:/var/runtime/node_modules:/var/runtime:/var/task"
                .into(),
        )),
        RuntimeKind::Provided => {}
    }
    for (k, v) in &f.environment {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    let mut reserved = vec![
        ("_HANDLER".to_string(), f.handler.clone()),
        ("AWS_REGION".into(), region.to_string()),
        ("AWS_DEFAULT_REGION".into(), region.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME".into(), f.name.clone()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(),
            f.memory_size.to_string(),
        ),
        ("AWS_LAMBDA_FUNCTION_VERSION".into(), f.version.clone()),
        (
            "AWS_LAMBDA_INITIALIZATION_TYPE".into(),
            if provisioned {
                "provisioned-concurrency"
            } else {
                "on-demand"
            }
            .into(),
        ),
        ("AWS_LAMBDA_LOG_GROUP_NAME".into(), log_group.to_string()),
        ("AWS_LAMBDA_LOG_STREAM_NAME".into(), log_stream.to_string()),
        ("LAMBDA_TASK_ROOT".into(), "/var/task".into()),
        ("LAMBDA_RUNTIME_DIR".into(), "/var/runtime".into()),
    ];
    if let Some(exec_env) = runtime.execution_env() {
        reserved.push(("AWS_EXECUTION_ENV".into(), exec_env));
    }
    for (k, v) in reserved {
        env.retain(|(ek, _)| *ek != k);
        env.push((k, v));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_errors_use_lambdas_wording() {
        let b = exit_error("r1", "exit status 1");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["errorType"], "Runtime.ExitError");
        assert_eq!(
            v["errorMessage"],
            "RequestId: r1 Error: Runtime exited with error: exit status 1"
        );
        let b = exit_error("r1", "exit status 0");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v["errorMessage"],
            "RequestId: r1 Error: Runtime exited without providing a reason"
        );
    }
}
