//! In-process API tests: the real router, a temp grant store and the recording
//! `NoFirewall` driver. Every endpoint, paging edges, auth failures, and that every
//! error is JSON with the right status. No root, no sockets.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use portcullis_daemon::api::{self, AppState, Tokens};
use portcullis_daemon::firewall;
use portcullis_daemon::firewall::none::NoFirewall;
use portcullis_daemon::grants::{clock, Granter};
use portcullis_daemon::store::{self, Store};
use portcullis_proto::Service;
use serde_json::{json, Value};
use tower::ServiceExt;

const TOKEN: &str = "alice-0123456789abcdef";
const OTHER: &str = "bob-0123456789abcdef00";

struct Api {
    app: Router,
    granter: Arc<Granter>,
    _dir: tempfile::TempDir,
}

fn api_with(store_ok: bool) -> Api {
    api_on(store_ok, clock::system())
}

fn api_on(store_ok: bool, clock: Arc<dyn clock::Clock>) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let driver = firewall::Shared::new(Box::new(NoFirewall::default()));
    let store = if store_ok {
        Store::open(
            &dir.path().join("grants.db"),
            store::Options { clock: clock.clone(), ..Default::default() },
        )
    } else {
        Err(store::StoreError::Unavailable("test: no store".into()))
    };
    let protected = vec![Service::tcp(22), Service::udp(51820)];
    let granter = Granter::new(driver, protected, store, clock).unwrap();
    let tokens = Tokens::parse(&format!("alice {TOKEN}\nbob {OTHER}\n")).unwrap();
    let state =
        AppState::new(Arc::clone(&granter), tokens, Duration::from_secs(600), Duration::from_secs(60));
    let (app, _) = api::router(state);
    Api { app, granter, _dir: dir }
}

fn api() -> Api {
    api_with(true)
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }
}

impl Api {
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &str)>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some((ctype, text)) => b.header(header::CONTENT_TYPE, ctype).body(Body::from(text.to_string())),
            None => b.body(Body::empty()),
        }
        .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
        let r = Resp { status, headers, text: String::from_utf8_lossy(&bytes).into_owned() };
        if status.is_client_error() || status.is_server_error() {
            // The contract: every error is JSON, with a code and a message.
            let ct = r.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
            assert!(ct.starts_with("application/json"), "{path}: error with content-type {ct:?}: {}", r.text);
            let v = r.json();
            let native = v["error"].is_string() && v["message"].is_string();
            let compat = v["result"] == "NG" && v["message"].is_string();
            assert!(native || compat, "{path}: error body {v}");
        }
        r
    }

    async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, Some(TOKEN), None).await
    }

    async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(Method::POST, path, Some(TOKEN), Some(("application/json", &body.to_string()))).await
    }

    async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, Some(TOKEN), None).await
    }

    fn live(&self) -> Vec<(IpAddr, Service)> {
        self.granter.live().unwrap().into_iter().map(|g| (g.addr, g.service)).collect()
    }
}

#[tokio::test]
async fn auth_is_required_everywhere_and_failures_are_json_401() {
    let a = api();
    for path in
        ["/v1/grants", "/v1/health", "/v1/version", "/metrics", "/v1/openapi.json", "/nope", "/api/portknock"]
    {
        let r = a.send(Method::GET, path, None, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(r.headers.get(header::WWW_AUTHENTICATE).unwrap(), "Bearer");
        let r = a.send(Method::GET, path, Some("wrong-token-0123456789"), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let r = a.send(Method::GET, "/v1/grants", None, None).await;
    assert_eq!(r.json()["error"], "unauthorized");
    // Not "Bearer": refused too.
    let req = Request::get("/v1/health")
        .header(header::AUTHORIZATION, format!("Basic {TOKEN}"))
        .body(Body::empty());
    let resp = a.app.clone().oneshot(req.unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Both tokens work.
    assert_eq!(a.send(Method::GET, "/v1/health", Some(OTHER), None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_json() {
    let a = api();
    let r = a.get("/v2/grants").await;
    assert_eq!((r.status, r.json()["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let r = a.send(Method::PUT, "/v1/grants", Some(TOKEN), None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.json()["error"], "method_not_allowed");
    assert!(r.headers.get(header::ALLOW).is_some(), "Allow header kept");
    let r = a.send(Method::PATCH, "/v1/grants/1", Some(TOKEN), None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn create_get_list_revoke_round_trip() {
    let a = api();
    let r = a.post("/v1/grants", json!({"address": "192.0.2.2", "ports": [22], "duration": 30})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let v = r.json();
    let g = &v["grants"][0];
    assert_eq!(g["address"], "192.0.2.2");
    assert_eq!((g["protocol"].as_str(), g["port"].as_u64()), (Some("tcp"), Some(22)));
    assert_eq!((g["state"].as_str(), g["origin"]["kind"].as_str()), (Some("active"), Some("api")));
    assert_eq!(g["origin"]["detail"], "alice");
    assert_eq!(g["duration_seconds"], 30);
    assert!(g["remaining_seconds"].as_u64().unwrap() >= 29);
    assert_eq!(v["warnings"], json!([]));
    assert_eq!(a.live(), vec![("192.0.2.2".parse().unwrap(), Service::tcp(22))]);
    let id = g["id"].as_i64().unwrap();

    let r = a.get(&format!("/v1/grants/{id}")).await;
    assert_eq!((r.status, r.json()["id"].as_i64()), (StatusCode::OK, Some(id)));

    // A repeat refreshes the same record.
    let r = a.post("/v1/grants", json!({"address": "192.0.2.2", "ports": [22], "duration": 90})).await;
    let g2 = &r.json()["grants"][0];
    assert_eq!((g2["id"].as_i64(), g2["refresh_count"].as_i64()), (Some(id), Some(1)));
    assert_eq!(g2["duration_seconds"], 90);

    let r = a.get("/v1/grants").await;
    let v = r.json();
    assert_eq!(
        (v["total"].as_u64(), v["page"].as_u64(), v["per_page"].as_u64()),
        (Some(1), Some(1), Some(100))
    );

    let r = a.delete(&format!("/v1/grants/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (r.json()["state"].as_str(), r.json()["revoked_by"].as_str()),
        (Some("revoked"), Some("alice"))
    );
    assert!(a.live().is_empty(), "revoke closes at once");
    let r = a.delete(&format!("/v1/grants/{id}")).await;
    assert_eq!((r.status, r.json()["error"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
    let r = a.delete("/v1/grants/424242").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = a.get("/v1/grants/424242").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// A knock-made grant revoked through the API, and an API grant reaching its expiry:
/// both leave the firewall, the scheduler and the active records together.
#[tokio::test]
async fn api_revoke_and_expiry_go_through_the_grant_lifecycle() {
    use portcullis_daemon::grants::{Origin, OriginKind};
    let clock = clock::ManualClock::new(1_800_000_000_000);
    let a = api_on(true, clock.clone());
    let door = Origin { kind: OriginKind::Door, detail: "ssh".into() };
    a.granter
        .grant(door, "192.0.2.3".parse().unwrap(), &[Service::tcp(22)], Duration::from_secs(30))
        .unwrap();
    a.granter.store().unwrap().sync().await;
    let v = a.get("/v1/grants?origin=door:ssh").await.json();
    let id = v["items"][0]["id"].as_i64().unwrap();
    let r = a.delete(&format!("/v1/grants/{id}")).await;
    assert_eq!((r.status, r.json()["state"].as_str()), (StatusCode::OK, Some("revoked")), "{}", r.text);
    assert!(a.live().is_empty(), "removed from the firewall");
    assert_eq!(a.granter.scheduled(), 0, "and from the expiry schedule");
    assert_eq!(a.get(&format!("/v1/grants/{id}")).await.json()["revoked_by"], "alice");

    let r = a.post("/v1/grants", json!({"address": "192.0.2.2", "ports": [22], "duration": 30})).await;
    let id = r.json()["grants"][0]["id"].as_i64().unwrap();
    clock.advance(Duration::from_millis(29_999));
    a.granter.expire_due();
    assert_eq!(a.live().len(), 1);
    clock.advance(Duration::from_millis(1));
    assert_eq!(a.granter.expire_due(), 1);
    assert!(a.live().is_empty(), "closed by the daemon at expiry");
    a.granter.store().unwrap().sync().await;
    let v = a.get(&format!("/v1/grants/{id}")).await.json();
    assert_eq!(v["state"], "expired", "{v}");
    let m = a.get("/metrics").await.text;
    assert!(m.lines().any(|l| l == "portcullis_daemon_expired_total 1"), "{m}");
    let r = a.delete(&format!("/v1/grants/{id}")).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn create_defaults_caps_and_warns() {
    let a = api();
    let r = a
        .post("/v1/grants", json!({"address": "2001:db8::2", "protocol": "udp", "ports": [51820, 51820]}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let v = r.json();
    assert_eq!(v["grants"].as_array().unwrap().len(), 1, "duplicate ports collapse");
    assert_eq!(v["grants"][0]["duration_seconds"], 60, "default_duration");
    let r = a
        .post("/v1/grants", json!({"address": "::ffff:192.0.2.7", "ports": [22, 8080], "duration": 999999}))
        .await;
    let v = r.json();
    assert_eq!(v["grants"][0]["address"], "192.0.2.7", "IPv4-mapped folds to IPv4");
    assert_eq!(v["grants"][0]["duration_seconds"], 600, "capped at max_duration");
    let w = v["warnings"].to_string();
    assert!(w.contains("capped") && w.contains("tcp/8080 is not protected"), "{w}");
    // The CLI's user agent makes the origin `cli`.
    let req = Request::post("/v1/grants")
        .header(header::AUTHORIZATION, format!("Bearer {OTHER}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, "portcullis-cli/0.1.0")
        .body(Body::from(json!({"address": "192.0.2.8", "ports": [22]}).to_string()))
        .unwrap();
    let resp = a.app.clone().oneshot(req).await.unwrap();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["grants"][0]["origin"], json!({"kind": "cli", "detail": "bob"}));
}

#[tokio::test]
async fn bad_input_is_refused_with_json_and_the_right_status() {
    let a = api();
    let cases: Vec<(Value, StatusCode)> = vec![
        (json!({"address": "nope", "ports": [22]}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"address": "192.0.2.2' OR '1'='1", "ports": [22]}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"address": "0.0.0.0", "ports": [22]}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"address": "::", "ports": [22]}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"address": "224.0.0.1", "ports": [22]}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"address": "255.255.255.255", "ports": [22]}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"address": "192.0.2.2", "ports": [0]}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"address": "192.0.2.2", "ports": [65536]}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"address": "192.0.2.2", "ports": [-1]}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"address": "192.0.2.2", "ports": []}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"address": "192.0.2.2", "ports": (1..=65).collect::<Vec<u16>>()}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"address": "192.0.2.2", "ports": [22], "duration": 0}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"address": "192.0.2.2", "ports": [22], "duration": -5}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"address": "192.0.2.2", "ports": [22], "duration": 1e300}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"address": "192.0.2.2", "ports": [22], "protocol": "icmp"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"address": "192.0.2.2", "ports": ["22"]}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"address": "192.0.2.2", "ports": [22], "extra": 1}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"ports": [22]}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!([1, 2]), StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (body, want) in cases {
        let r = a.post("/v1/grants", body.clone()).await;
        assert_eq!(r.status, want, "{body}: {}", r.text);
    }
    let r =
        a.send(Method::POST, "/v1/grants", Some(TOKEN), Some(("application/json", "{\"address\":"))).await;
    assert_eq!((r.status, r.json()["error"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")));
    let r = a.send(Method::POST, "/v1/grants", Some(TOKEN), Some(("text/plain", "{}"))).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = a.send(Method::POST, "/v1/grants", Some(TOKEN), None).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = format!("{{\"address\":\"192.0.2.2\",\"ports\":[22],\"pad\":\"{}\"}}", "x".repeat(1 << 20));
    let r = a.send(Method::POST, "/v1/grants", Some(TOKEN), Some(("application/json", &huge))).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    assert!(a.live().is_empty(), "nothing was granted");
    let r = a.get("/v1/grants").await;
    assert_eq!(r.json()["total"], 0, "and nothing recorded");
}

#[tokio::test]
async fn list_filters_and_paging_edges() {
    let a = api();
    for i in 1..=5u16 {
        let r = a.post("/v1/grants", json!({"address": format!("192.0.2.{i}"), "ports": [22]})).await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    a.post("/v1/grants", json!({"address": "2001:db8::9", "ports": [22]})).await;
    let id = a.get("/v1/grants?address=192.0.2.3").await.json()["items"][0]["id"].as_i64().unwrap();
    a.delete(&format!("/v1/grants/{id}")).await;

    let page = |q: &str| {
        let q = q.to_string();
        let a = &a;
        async move { a.get(&format!("/v1/grants{q}")).await }
    };
    let v = page("?per_page=2").await.json();
    assert_eq!((v["items"].as_array().unwrap().len(), v["total"].as_u64()), (2, Some(6)));
    assert_eq!(v["items"][0]["address"], "2001:db8::9", "newest first");
    let v = page("?per_page=2&page=3").await.json();
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    let v = page("?per_page=4&page=2").await.json();
    assert_eq!(v["items"].as_array().unwrap().len(), 2, "short last page");
    let v = page("?per_page=2&page=999").await.json();
    assert_eq!(
        (v["items"].as_array().unwrap().len(), v["total"].as_u64()),
        (0, Some(6)),
        "past the end: empty"
    );
    assert_eq!(page("?per_page=1000").await.status, StatusCode::OK);
    assert_eq!(page("?state=active").await.json()["total"], 5);
    assert_eq!(page("?state=revoked").await.json()["total"], 1);
    assert_eq!(page("?address=2001:0db8:0::9").await.json()["total"], 1, "address normalised");
    assert_eq!(page("?origin=api").await.json()["total"], 6);
    assert_eq!(page("?origin=api:alice").await.json()["total"], 6);
    assert_eq!(page("?origin=door").await.json()["total"], 0);
    assert_eq!(page("?origin=api:x'%20OR%20'1'='1").await.json()["total"], 0, "bound, not spliced");
    for bad in [
        "?page=0",
        "?per_page=0",
        "?per_page=1001",
        "?page=-1",
        "?page=abc",
        "?per_page=99999999999999999999999",
        "?state=open",
        "?address=999.1.1.1",
        "?address=1'--",
        "?origin=martian",
        "?sort=id",
    ] {
        let r = page(bad).await;
        assert_eq!(
            (r.status, r.json()["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("bad_request")),
            "{bad}"
        );
    }
    for bad in ["/v1/grants/abc", "/v1/grants/99999999999999999999999", "/v1/grants/1.5"] {
        assert_eq!(a.get(bad).await.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(a.delete(bad).await.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_revokes_exactly_one_succeeds() {
    let a = Arc::new(api());
    let id = a.post("/v1/grants", json!({"address": "192.0.2.2", "ports": [22]})).await.json()["grants"][0]
        ["id"]
        .as_i64()
        .unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.delete(&format!("/v1/grants/{id}")).await.status })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::CONFLICT => {}
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn health_version_openapi_and_metrics() {
    let a = api();
    let v = a.get("/v1/health").await.json();
    assert_eq!(
        v,
        json!({"status": "ok", "firewall": "none", "kernel_expiry": false, "store": "ok", "firewall_status": "ok", "firewall_restores": 0})
    );
    let v = a.get("/v1/version").await.json();
    assert_eq!((v["name"].as_str(), v["api"].as_str()), (Some("portcullisd"), Some("v1")));
    let r = a.get("/v1/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in ["/v1/grants", "/v1/grants/{id}", "/v1/health", "/v1/version", "/metrics", "/api/portknock"] {
        assert!(doc["paths"][p].is_object(), "{p} missing from the OpenAPI document");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");

    a.post("/v1/grants", json!({"address": "192.0.2.2", "ports": [22]})).await;
    a.granter.store().unwrap().sync().await;
    let r = a.get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/plain"));
    for line in [
        "portcullis_store_up 1",
        "portcullis_grants_active{origin=\"api\"} 1",
        "portcullis_grant_records{origin=\"api\",state=\"active\"} 1",
        "portcullis_grants_created_total{origin=\"api\",door=\"\"} 1",
        "portcullis_spa_rejected_total{reason=\"replay\"} 0",
        "portcullis_store_dropped_total 0",
        "# TYPE portcullis_grants_active gauge",
    ] {
        assert!(r.text.lines().any(|l| l == line), "missing {line:?} in:\n{}", r.text);
    }
}

#[tokio::test]
async fn compat_portknock_endpoint() {
    let a = api();
    for path in ["/api/portknock", "/api/portkock"] {
        let r = a.post(path, json!({"action": "allow", "ip": "192.0.2.2", "port": 22})).await;
        assert_eq!((r.status, r.json()), (StatusCode::OK, json!({"result": "OK"})), "{path}");
    }
    assert_eq!(a.live(), vec![("192.0.2.2".parse().unwrap(), Service::tcp(22))]);
    let v = a.get("/api/portknock?items=50&page=1").await.json();
    assert_eq!(v["result"], "OK");
    let item = &v["items"][0];
    assert_eq!(item["destination"], json!({"action": "allow", "ip": "192.0.2.2", "port": 22}));
    assert_eq!(item["result"], "OK");
    assert!(item["requested_at"].is_string() && item["expired_at"].is_string());
    let id = item["id"].as_i64().unwrap();
    let v = a.get(&format!("/api/portknock/{id}")).await.json();
    assert_eq!((v["result"].as_str(), v["item"]["id"].as_i64()), (Some("OK"), Some(id)));
    let r = a.post("/api/portknock", json!({"action": "deny", "ip": "192.0.2.2", "port": 22})).await;
    assert_eq!(r.json(), json!({"result": "OK"}));
    assert!(a.live().is_empty());
    // Errors in the compat shape.
    let r = a.post("/api/portknock", json!({"action": "deny", "ip": "192.0.2.2", "port": 22})).await;
    assert_eq!((r.status, r.json()["result"].as_str()), (StatusCode::NOT_FOUND, Some("NG")));
    for (body, want) in [
        (json!({"action": "allow", "ip": "x", "port": 22}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"action": "allow", "ip": "192.0.2.2", "port": 70000}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"action": "open", "ip": "192.0.2.2", "port": 22}), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let r = a.post("/api/portkock", body.clone()).await;
        assert_eq!((r.status, r.json()["result"].as_str()), (want, Some("NG")), "{body}");
    }
    let r = a.send(Method::GET, "/api/portknock", None, None).await;
    assert_eq!((r.status, r.json()["result"].as_str()), (StatusCode::UNAUTHORIZED, Some("NG")));
    assert_eq!(a.get("/api/portknock?items=0").await.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.get("/api/portknock/999").await.json()["result"], "NG");
    assert_eq!(a.send(Method::PUT, "/api/portknock", Some(TOKEN), None).await.json()["result"], "NG");
}

#[tokio::test]
async fn without_a_store_the_api_says_503_and_health_says_degraded() {
    let a = api_with(false);
    let r = a.post("/v1/grants", json!({"address": "192.0.2.2", "ports": [22]})).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("store_unavailable"))
    );
    assert!(a.live().is_empty(), "an unrecordable API grant is not made");
    assert_eq!(a.get("/v1/grants").await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.get("/v1/grants/1").await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.delete("/v1/grants/1").await.status, StatusCode::SERVICE_UNAVAILABLE);
    let v = a.get("/v1/health").await.json();
    assert_eq!(v["status"], "degraded");
    let m = a.get("/metrics").await.text;
    assert!(m.contains("portcullis_store_up 0"), "{m}");
    assert!(!m.contains("portcullis_grant_records{"), "unknown is left out, not 0: {m}");
}

#[tokio::test]
async fn knock_made_grants_appear_with_their_door() {
    use portcullis_daemon::capture::LocalView;
    use portcullis_daemon::daemon::engine::Engine;
    use portcullis_proto::wire::Datagram;
    use portcullis_proto::{Millis, Proto, TcpFlags};

    let a = api();
    let conf = "[[door]]\nname = \"ssh\"\nsequence = [7000, 9000, 8000]\nopen = [\"tcp/22\"]\n";
    let c = portcullis_daemon::config::parse(conf, std::path::Path::new("t.toml")).unwrap();
    let mut e = Engine::with_granter(&c, Arc::clone(&a.granter)).unwrap();
    let mut view = LocalView::default();
    view.addrs.insert("192.0.2.1".parse().unwrap());
    for (i, port) in [7000u16, 9000, 8000].into_iter().enumerate() {
        let d = Datagram {
            src: "192.0.2.2".parse().unwrap(),
            dst: "192.0.2.1".parse().unwrap(),
            proto: Proto::Tcp,
            src_port: 40000,
            dst_port: port,
            flags: TcpFlags(TcpFlags::SYN),
            payload: &[],
        };
        e.on_datagram(&view, 1, &d, Millis(i as u64), std::time::SystemTime::now());
    }
    a.granter.store().unwrap().sync().await;
    let v = a.get("/v1/grants?origin=door:ssh").await.json();
    assert_eq!(v["total"], 1, "{v}");
    assert_eq!(v["items"][0]["address"], "192.0.2.2");
    assert_eq!(v["items"][0]["duration_seconds"], 30);
}

#[tokio::test]
async fn compat_reads_the_lenient_json_the_original_read() {
    let a = api();
    let post = |ctype: &'static str, body: String| {
        let a = &a;
        async move { a.send(Method::POST, "/api/portkock", Some(TOKEN), Some((ctype, &body))).await }
    };
    // The original's documented call, `curl -X POST -d '{action:"allow", ip:..., port:8080}'`:
    // unquoted keys, sent form-encoded because curl -d says so.
    for (ctype, body) in [
        ("application/x-www-form-urlencoded", r#"{action:"allow", ip:"192.0.2.2", port:8080}"#),
        ("application/json", "{'action': 'allow', 'ip': '192.0.2.3', 'port': 8080,}"),
        ("text/plain", "\u{feff}{ // a .NET client\n Action: 'allow', IP: '192.0.2.4', Port: '8080' }"),
    ] {
        let r = post(ctype, body.to_string()).await;
        assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, r#"{"result":"OK"}"#), "{body}");
    }
    assert_eq!(a.live().len(), 3);
    for (body, status, message) in [
        (
            r#"{action:"allow", ip:"192.0.2.5" port:8080}"#.to_string(),
            StatusCode::BAD_REQUEST,
            "the body is not JSON: expected comma at line 1 column 33",
        ),
        (
            r#"{action:"allow", ip:"192.0.2.5", port:8080, PORT:22}"#.to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"key "port" is given twice"#,
        ),
        (
            r#"{action:"allow", ip:"192.0.2.5"}"#.to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing field `port`",
        ),
        (
            "[1, 2]".to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid type: sequence, expected an object {action, ip, port} at line 1 column 1",
        ),
        (
            format!(
                "{{action:'allow', ip:'192.0.2.5', port:22, x:{}1{}}}",
                "[".repeat(5000),
                "]".repeat(5000)
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body larger than 4096 bytes",
        ),
        (
            format!("{{action:'allow', ip:'192.0.2.5', port:22, x:{}1{}}}", "[".repeat(100), "]".repeat(100)),
            StatusCode::BAD_REQUEST,
            "the body nests too deeply for a knock request",
        ),
    ] {
        let r = post("application/json", body.clone()).await;
        assert_eq!((r.status, r.json()), (status, json!({"result": "NG", "message": message})), "{body}");
    }
    assert_eq!(a.live().len(), 3, "nothing more was granted");
    // Only there: /v1 stays strict JSON.
    let r = a
        .send(
            Method::POST,
            "/v1/grants",
            Some(TOKEN),
            Some(("application/json", "{address:'192.0.2.5', ports:[22]}")),
        )
        .await;
    assert_eq!((r.status, r.json()["error"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")));
}
