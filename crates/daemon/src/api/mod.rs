//! The local REST API (axum): grants, compatibility endpoint, health, metrics, OpenAPI.
//!
//! Served on a unix socket (mode 0600) and/or a loopback TCP port, on its own small
//! tokio runtime (2 worker threads) so nothing here can slow the capture thread. Every
//! request must carry `Authorization: Bearer TOKEN` (checked before routing, so unknown
//! paths answer 401 to strangers), is logged with the token's name, and every error is a
//! JSON body with the right status (see [`error`]).
//!
//! Layers, outermost first: [`json_errors`] (turns any non-JSON error body into JSON,
//! and errors on `/api/portknock` into `{"result":"NG",...}`), [`auth`], the body limit,
//! then the routes.

pub mod compat;
pub mod error;
pub mod fleet;
pub mod grants;
pub mod metrics;
pub mod tokens;
pub mod view;

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::ApiConfig;
use crate::grants::Granter;
use error::ApiError;
use portcullis_api::ErrorBody;
pub use tokens::Tokens;

/// Largest request body accepted.
pub const MAX_BODY: usize = 16 * 1024;

/// The authenticated caller: the token's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

/// What every handler can reach.
pub struct Inner {
    /// The shared grant path.
    pub granter: Arc<Granter>,
    /// Bearer tokens.
    pub tokens: Tokens,
    /// Cap on grant durations.
    pub max_duration: Duration,
    /// Duration when a request does not say.
    pub default_duration: Duration,
}

/// Handler state (cheap to clone).
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    /// Build the state.
    pub fn new(
        granter: Arc<Granter>,
        tokens: Tokens,
        max_duration: Duration,
        default_duration: Duration,
    ) -> AppState {
        AppState(Arc::new(Inner { granter, tokens, max_duration, default_duration }))
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Run blocking store work off the async workers.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "worker failed"))
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "portcullisd API",
        description = "Local grants API of portcullisd. Every request needs `Authorization: Bearer TOKEN`; \
                       every error is JSON.",
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(ErrorBody)),
    tags(
        (name = "grants", description = "Grant records and the firewall holes they describe"),
        (name = "compat", description = "Classic /api/portknock endpoint"),
        (name = "meta", description = "Health, version, metrics"),
    )
)]
struct ApiDoc;

/// The router and its OpenAPI document.
pub fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (routes, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(grants::create_grant, grants::list_grants))
        .routes(routes!(grants::get_grant, grants::revoke_grant))
        .routes(routes!(grants::health))
        .routes(routes!(grants::version))
        .routes(routes!(metrics::metrics))
        .routes(routes!(compat::knock, compat::list))
        .routes(routes!(compat::get_one))
        .split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let json: Arc<String> = Arc::new(serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into()));
    let openapi = move || {
        let json = Arc::clone(&json);
        async move { ([(header::CONTENT_TYPE, "application/json")], json.as_str().to_owned()) }
    };
    let app = routes
        .route("/v1/openapi.json", get(openapi))
        // The original project's misspelling, kept for its clients (not in the document).
        .route("/api/portkock", post(compat::knock).get(compat::list))
        .route("/api/portkock/{id}", get(compat::get_one))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn(json_errors))
        .with_state(state);
    (app, doc)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("no route for {}", grants::trunc(req.uri().path())))
}

/// Bearer auth, before routing; logs every request with the caller's token name.
async fn auth(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes().strip_prefix(b"Bearer ").unwrap_or(b"").trim_ascii().to_vec());
    let caller = presented.as_deref().and_then(|t| state.tokens.lookup(t)).map(str::to_string);
    let resp = match &caller {
        Some(name) => {
            req.extensions_mut().insert(Caller(name.clone()));
            next.run(req).await
        }
        None if presented.is_none() => ApiError::unauthorized("missing bearer token").into_response(),
        None => ApiError::unauthorized("bad token").into_response(),
    };
    tracing::info!(
        "api: {} {method} {} -> {} ({:.1} ms)",
        caller.as_deref().unwrap_or("(unauthenticated)"),
        path.escape_debug(),
        resp.status().as_u16(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    resp
}

/// Every error leaves as JSON: bodies axum or hyper wrote in plain text (405, ...) are
/// rewritten, keeping status and headers; `/api/portknock` errors get the compat shape.
async fn json_errors(req: Request, next: Next) -> Response {
    let compat = compat::is_compat_path(req.uri().path());
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json && !compat {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let message = if is_json {
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => e.message,
            Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
        }
    } else if bytes.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        String::from_utf8_lossy(&bytes).chars().take(512).collect()
    };
    let mut out = if compat {
        compat::ng(status, message)
    } else {
        ApiError::new(status, ApiError::code_for(status), message).into_response()
    };
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// A running API server.
pub struct ApiServer {
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
    socket: Option<PathBuf>,
    /// The bound TCP address, if any (useful with port 0).
    pub tcp: Option<SocketAddr>,
}

impl ApiServer {
    /// Stop serving (in-flight requests get up to 2 s) and remove the socket.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(p) = self.socket.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl ApiServer {
    /// Leave the socket file in place at [`ApiServer::stop`] (another server goes on
    /// serving the same listener).
    pub fn keep_socket_file(&mut self) {
        self.socket = None;
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bind_unix(path: &Path) -> anyhow::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?
        }
        Ok(_) => anyhow::bail!("{} exists and is not a socket; refusing to replace it", path.display()),
        Err(_) => {}
    }
    let l = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", path.display()))?;
    Ok(l)
}

/// The API's sockets and tokens, taken while the daemon may still read root-only
/// files and bind anywhere; served later (possibly by an unprivileged process).
#[derive(Debug)]
pub struct Bound {
    tokens: Tokens,
    unix: Option<std::os::unix::net::UnixListener>,
    tcp: Option<std::net::TcpListener>,
}

impl Bound {
    /// The same listeners (duplicated descriptors) and tokens.
    pub fn try_clone(&self) -> std::io::Result<Bound> {
        Ok(Bound {
            tokens: self.tokens.clone(),
            unix: self.unix.as_ref().map(|l| l.try_clone()).transpose()?,
            tcp: self.tcp.as_ref().map(|l| l.try_clone()).transpose()?,
        })
    }

    /// With `tokens` instead.
    pub fn with_tokens(self, tokens: Tokens) -> Bound {
        Bound { tokens, ..self }
    }
}

/// Load the tokens and bind the sockets of `cfg` (no threads started).
pub fn bind(cfg: &ApiConfig) -> anyhow::Result<Bound> {
    let tokens = Tokens::load(&cfg.tokens_file).map_err(|e| anyhow::anyhow!("api tokens_file: {e}"))?;
    let unix = cfg.socket.as_deref().map(bind_unix).transpose()?;
    let tcp = match cfg.listen {
        Some(a) => Some(std::net::TcpListener::bind(a).with_context(|| format!("binding api listen {a}"))?),
        None => None,
    };
    for fd in [unix.as_ref().map(|l| l.set_nonblocking(true)), tcp.as_ref().map(|l| l.set_nonblocking(true))]
        .into_iter()
        .flatten()
    {
        fd.context("api socket")?;
    }
    Ok(Bound { tokens, unix, tcp })
}

/// Start the API for `cfg`. Fails (and so does the daemon) on a bad tokens file or a
/// socket/port that cannot be bound: a configured API that silently is not there helps nobody.
pub fn start(cfg: &ApiConfig, granter: Arc<Granter>) -> anyhow::Result<ApiServer> {
    serve(bind(cfg)?, cfg, granter)
}

/// Serve what [`bind`] prepared.
pub fn serve(bound: Bound, cfg: &ApiConfig, granter: Arc<Granter>) -> anyhow::Result<ApiServer> {
    let state = AppState::new(granter, bound.tokens, cfg.max_duration, cfg.default_duration);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .thread_name("api")
        .enable_all()
        .build()
        .context("starting the API runtime")?;
    let (unix, tcp) = rt.block_on(async {
        let unix = bound.unix.map(tokio::net::UnixListener::from_std).transpose()?;
        let tcp = bound.tcp.map(tokio::net::TcpListener::from_std).transpose()?;
        anyhow::Ok((unix, tcp))
    })?;
    let tcp_addr = tcp.as_ref().and_then(|l| l.local_addr().ok());
    let (app, _) = router(state.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let where_ = [
        cfg.socket.as_ref().map(|p| format!("unix:{}", p.display())),
        tcp_addr.map(|a| format!("http://{a}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" and ");
    tracing::info!("api: serving on {where_} ({} token(s))", state.tokens.len());
    let thread = std::thread::Builder::new().name("api".into()).spawn(move || {
        rt.block_on(async move {
            let mut set = tokio::task::JoinSet::new();
            let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Some(l) = unix {
                let fut = axum::serve(l, app.clone()).with_graceful_shutdown(stopped(stop_rx.clone()));
                set.spawn(async move {
                    if let Err(e) = fut.await {
                        tracing::error!("api: unix socket server failed: {e}");
                    }
                });
            }
            if let Some(l) = tcp {
                let fut = axum::serve(l, app).with_graceful_shutdown(stopped(stop_rx.clone()));
                set.spawn(async move {
                    if let Err(e) = fut.await {
                        tracing::error!("api: tcp server failed: {e}");
                    }
                });
            }
            let grace = async {
                stopped(stop_rx.clone()).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            };
            tokio::select! {
                _ = async { while set.join_next().await.is_some() {} } => {}
                _ = grace => {}
            }
        });
        rt.shutdown_timeout(Duration::from_secs(1));
    })?;
    Ok(ApiServer { stop: Some(stop_tx), thread: Some(thread), socket: cfg.socket.clone(), tcp: tcp_addr })
}

/// `Content-Type` value for JSON responses (shared with tests).
pub fn json_content_type() -> HeaderValue {
    HeaderValue::from_static("application/json")
}
