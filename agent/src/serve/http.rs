//! The HTTP side of `serve`: `GET /metrics` (OpenMetrics or the classic text format, as the
//! client's Accept header asks) and `GET /healthz`, on the session's tokio runtime (hyper,
//! HTTP/1.1). The listener is bound before anything is loaded, so a port in use is one line
//! and exit 1; at the stop, connections finish their request and the listener closes.
use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, header, service::service_fn, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::{sync::watch, task::JoinHandle};

use super::{health::Health, metrics};
use crate::error::AgentError;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a request handler reads.
pub struct Shared {
    pub registry: Registry,
    pub health: Arc<Health>,
    /// `/healthz` fails when no interval closed for this long.
    pub stale_ms: u64,
}

/// `ADDR:PORT` bound now (std, non-blocking), or the one line that says why not.
pub fn bind(listen: &str) -> Result<std::net::TcpListener, AgentError> {
    let addr: SocketAddr = listen.parse().map_err(|_| {
        AgentError::Usage(format!("--listen {listen}: not an ADDR:PORT (e.g. 127.0.0.1:9464 or [::1]:9464)"))
    })?;
    let l = std::net::TcpListener::bind(addr).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => "another process listens there: stop it or pick another --listen",
            std::io::ErrorKind::AddrNotAvailable => "no interface of this host has that address: pick one it has",
            std::io::ErrorKind::PermissionDenied => "ports below 1024 need CAP_NET_BIND_SERVICE: pick a higher port",
            _ => "pick another --listen",
        };
        AgentError::Usage(format!("cannot listen on {addr}: {e}: {hint}"))
    })?;
    l.set_nonblocking(true).map_err(|e| AgentError::Usage(format!("cannot listen on {addr}: {e}")))?;
    Ok(l)
}

/// The running server: `stop` closes the listener and lets open connections finish.
pub struct Server {
    stop: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

/// Serve on `listener` until stopped. Must be called inside the runtime.
pub fn spawn(listener: std::net::TcpListener, shared: Arc<Shared>) -> std::io::Result<Server> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let (stop, stop_rx) = watch::channel(false);
    let accept = tokio::spawn(accept_loop(listener, shared, stop_rx));
    Ok(Server { stop, accept })
}

impl Server {
    /// Stop accepting (new connections are refused once the listener is closed) and give
    /// open connections up to a second to finish the request they are on.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.accept).await;
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let (shared, mut stop) = (shared.clone(), stop.clone());
                    conns.spawn(async move {
                        let svc = service_fn(move |req| {
                            let shared = shared.clone();
                            async move { Ok::<_, Infallible>(respond(&shared, &req)) }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(Duration::from_secs(10))
                            .serve_connection(TokioIo::new(stream), svc);
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            _ = stopped(&mut stop) => {
                                conn.as_mut().graceful_shutdown();
                                let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
                            }
                        }
                    });
                }
                Err(e) => {
                    log::warn!("serve: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// Until the stop is sent (or the sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn respond(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &str| reply(status, "text/plain; charset=utf-8", body.to_string());
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
            let om = metrics::openmetrics(&shared.registry);
            if wants_openmetrics(accept) {
                reply(StatusCode::OK, OPENMETRICS, om)
            } else {
                reply(StatusCode::OK, CLASSIC, metrics::classic(&om))
            }
        }
        "/healthz" if shared.health.healthy(shared.stale_ms) => text(StatusCode::OK, "ok\n"),
        "/healthz" => text(StatusCode::SERVICE_UNAVAILABLE, "not watching: stopping, or the pipeline is stalled\n"),
        "/" => text(StatusCode::OK, "agent serve: /metrics, /healthz\n"),
        _ => text(StatusCode::NOT_FOUND, "not found: /metrics, /healthz\n"),
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

/// OpenMetrics when the client ranks it at least as high as the classic format, as the
/// Prometheus server does (`application/openmetrics-text;version=1.0.0,...,text/plain;q=0.5`);
/// the classic format for `text/plain`, `*/*` or no Accept header.
pub fn wants_openmetrics(accept: &str) -> bool {
    let (mut om, mut classic) = (0.0f64, 0.0f64);
    for part in accept.split(',') {
        let mut fields = part.split(';').map(str::trim);
        let media = fields.next().unwrap_or("").to_ascii_lowercase();
        let q = fields.filter_map(|f| f.strip_prefix("q=")).find_map(|v| v.parse::<f64>().ok()).unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => om = om.max(q),
            "text/plain" | "text/*" | "*/*" => classic = classic.max(q),
            _ => {}
        }
    }
    om > 0.0 && om >= classic
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_as_prometheus_asks() {
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(prom));
        assert!(wants_openmetrics("application/openmetrics-text"));
        assert!(!wants_openmetrics(""));
        assert!(!wants_openmetrics("text/plain"));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics("text/plain;version=0.0.4,application/openmetrics-text;q=0.5"));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0"));
    }

    #[test]
    fn bad_listen_addresses_are_one_line() {
        let e = bind("localhost-ish").unwrap_err().to_string();
        assert!(e.contains("not an ADDR:PORT"), "{e}");
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let e = bind(&held.local_addr().unwrap().to_string()).unwrap_err().to_string();
        assert!(e.contains("another process listens there"), "{e}");
        assert!(!e.contains('\n'));
    }
}
