//! Thread-per-core request handling: one current-thread tokio runtime per CPU, each on a
//! thread of its own (decision 0009).
//!
//! The API's connections are dealt to the workers round-robin. Everything a request starts
//! is spawned on the worker it runs on — its invocation task and, when it starts an
//! environment, that environment's Runtime API listener and log writer — and pools hand an
//! invocation an idle environment of its own worker first. A warm invocation then passes
//! between its tasks on one thread: no hand-off between threads, no futex wake-up, no
//! cross-CPU interrupt on the way.
//!
//! Without installed workers (unit tests, or before `serve` installs them) [`spawn`] falls back
//! to the ambient runtime and [`current`] is `None`.

use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

type Job = Box<dyn FnOnce() + Send>;

/// The worker threads.
pub struct Workers {
    queues: Vec<mpsc::UnboundedSender<Job>>,
    next: AtomicUsize,
    stop: tokio::sync::watch::Sender<bool>,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

static WORKERS: OnceLock<Workers> = OnceLock::new();

thread_local! {
    static CURRENT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

impl Workers {
    /// Starts `n` worker threads (at least one), each running a current-thread runtime.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let mut queues = Vec::with_capacity(n.max(1));
        let mut threads = Vec::with_capacity(n.max(1));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        for index in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
            let mut stopped = stopped.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("nimbus-worker-{index}"))
                    .spawn(move || {
                        CURRENT.with(|c| c.set(Some(index)));
                        runtime.block_on(async move {
                            loop {
                                tokio::select! {
                                    job = rx.recv() => match job {
                                        Some(job) => job(),
                                        None => break,
                                    },
                                    // Set, or the sender gone: stop either way.
                                    _ = stopped.wait_for(|stop| *stop) => break,
                                }
                            }
                        });
                        // Drops every task still on this worker (an invocation in flight drops
                        // its environment, which kills it); blocking work gets a moment.
                        runtime.shutdown_timeout(std::time::Duration::from_secs(1));
                    })?,
            );
            queues.push(tx);
        }
        Ok(Workers {
            queues,
            next: AtomicUsize::new(0),
            stop,
            threads: std::sync::Mutex::new(threads),
        })
    }

    /// Stops every worker: their tasks (connections, invocations in flight, environments'
    /// Runtime APIs) are dropped. Returns once the threads have ended.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }

    /// Runs `make()` on the next worker (round-robin) and spawns the future it returns there.
    pub fn spawn_with<F, Fut>(&self, make: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.spawn_on(i, make);
    }

    /// Runs `make()` on worker `index` (modulo their number) and spawns its future there.
    /// After [`Workers::shutdown`] the job is dropped unrun.
    pub fn spawn_on<F, Fut>(&self, index: usize, make: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let _ = self.queues[index % self.queues.len()].send(Box::new(move || {
            tokio::spawn(make());
        }));
    }
}

/// Makes `workers` the process's workers. Only the first call has an effect.
pub fn install(workers: Workers) -> &'static Workers {
    WORKERS.get_or_init(|| workers)
}

/// The process's workers, once installed.
pub fn get() -> Option<&'static Workers> {
    WORKERS.get()
}

/// The index of the worker this thread is, if it is one.
pub fn current() -> Option<usize> {
    CURRENT.with(|c| c.get())
}

/// Spawns `fut` on the current worker when called from one, else on the next worker, else
/// (no workers installed) on the ambient runtime.
pub fn spawn<Fut>(fut: Fut)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    match (current(), get()) {
        (None, Some(w)) => w.spawn_with(move || fut),
        _ => {
            tokio::spawn(fut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_on_worker_threads_in_turn() {
        let workers = Workers::start(2).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            workers.spawn_with(move || async move {
                // A task spawned from inside stays on the same worker.
                let outer = current();
                let inner = tokio::spawn(async { current() }).await.unwrap();
                tx.send((outer, inner)).unwrap();
            });
        }
        let mut seen: Vec<_> = (0..4).map(|_| rx.recv().unwrap()).collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                (Some(0), Some(0)),
                (Some(0), Some(0)),
                (Some(1), Some(1)),
                (Some(1), Some(1))
            ]
        );
        assert_eq!(current(), None, "the test thread is not a worker");
        workers.shutdown();
    }

    #[test]
    fn a_job_can_be_sent_to_a_chosen_worker() {
        let workers = Workers::start(2).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for index in [1, 1, 0, 3] {
            let tx = tx.clone();
            workers.spawn_on(index, move || async move { tx.send(current()).unwrap() });
        }
        let got: Vec<_> = (0..4).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(got.iter().filter(|w| **w == Some(1)).count(), 3);
        assert_eq!(got.iter().filter(|w| **w == Some(0)).count(), 1);
        workers.shutdown();
    }

    #[test]
    fn shutdown_drops_the_tasks_left_on_the_workers() {
        struct SetOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let workers = Workers::start(1).unwrap();
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let guard = SetOnDrop(dropped.clone());
        workers.spawn_with(move || async move {
            let _guard = guard;
            tx.send(()).unwrap();
            std::future::pending::<()>().await;
        });
        rx.recv().unwrap();
        workers.shutdown();
        assert!(dropped.load(Ordering::SeqCst));
    }
}
