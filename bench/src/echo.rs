//! The floor the warm section compares against: the least an HTTP/1.1 server can do per
//! request — hyper on tokio's multi-threaded runtime (as `nimbus serve`), `TCP_NODELAY`, read
//! the body, send it back. Runs as its own process (`nimbus-bench echo-server`) and exits when
//! its stdin closes, so it never outlives the harness.

use std::convert::Infallible;
use std::io::Write;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// The floor's own idle-polling request, as `nimbus serve` holds one (decision 0011).
static IDLE_POLL: std::sync::OnceLock<nimbus::invoke::idle_poll::IdlePoll> =
    std::sync::OnceLock::new();

pub(crate) fn run(idle_poll: bool) -> anyhow::Result<()> {
    if idle_poll {
        use nimbus::invoke::idle_poll::{IdlePoll, LINGER};
        let request = nimbus_sys::cpuidle::CpuLatencyRequest::open()?;
        let _ = IDLE_POLL.set(IdlePoll::start(request, LINGER)?);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        // One worker per core, explicitly: TOKIO_WORKER_THREADS in the environment is meant
        // for the server under test (it inherits it), not for the harness.
        .worker_threads(crate::cores())
        .enable_all()
        .build()?;
    rt.block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", listener.local_addr()?)?;
        out.flush()?;
    }
    // EOF (or an error) on stdin: the harness is gone.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(echo);
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(p) = IDLE_POLL.get() {
        p.touch();
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}
