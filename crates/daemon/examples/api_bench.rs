//! Grants API benchmarks (not a test). Run as root: `bash scripts/api-bench.sh`.
//!
//! 1. API allow → port reachable: the daemon (nftables) in a throwaway lab, a grant over
//!    the unix socket, then TCP connects from the client namespace until one succeeds.
//! 2. 1,000 concurrent allow+revoke requests (distinct addresses) plus 200 concurrent
//!    allows of one key: no record lost, none duplicated, nothing left in the firewall.
//! 3. List latency with 100,000 records (in process, real store, real router).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use portcullis_daemon::api::{self, AppState, Tokens};
use portcullis_daemon::firewall;
use portcullis_daemon::firewall::none::NoFirewall;
use portcullis_daemon::grants::clock::{self, Clock};
use portcullis_daemon::grants::{Granter, Origin, OriginKind};
use portcullis_daemon::lab::{self, Lab, Probe};
use portcullis_daemon::store::{self, CloseTarget, Closing, GrantState, NewGrants, Store};
use portcullis_proto::Service;
use serde_json::{json, Value};
use tower::ServiceExt;

const TOKEN: &str = "bench-0123456789abcdef0123";

fn pct(mut v: Vec<Duration>) -> String {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "n={} p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms",
        v.len(),
        p(0.5).as_secs_f64() * 1e3,
        p(0.9).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3
    )
}

async fn call(sock: &Path, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let s = tokio::net::UnixStream::connect(sock).await.expect("connect");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    let body = match body {
        Some(v) => {
            b = b.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    let resp = tx.send_request(b.body(Full::new(body)).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn daemon_bin() -> PathBuf {
    let me = std::env::current_exe().unwrap();
    let p = me.parent().unwrap().parent().unwrap().join("portcullisd");
    assert!(p.exists(), "{} missing: cargo build --release -p portcullis-daemon", p.display());
    p
}

fn lab_benches(rt: &tokio::runtime::Runtime) {
    let mut lab = Lab::new("apibench").expect("lab (root?)");
    let dir = std::env::temp_dir().join(format!("pc-apibench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("bench {TOKEN}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sock = dir.join("api.sock");
    let conf = dir.join("p.toml");
    std::fs::write(
        &conf,
        format!(
            "[daemon]\nstate_dir = \"{}/state\"\nmax_grants = 65536\n[[door]]\nname = \"ssh\"\nsequence = [7000, 9000, 8000]\nopen = [\"tcp/2222\"]\n[api]\nsocket = \"{}\"\ntokens_file = \"tokens\"\n",
            dir.display(),
            sock.display()
        ),
    )
    .unwrap();
    let server = lab.server.clone();
    // A listener that keeps accepting (a full backlog would drop SYNs and skew the figures).
    let srv_ns = PathBuf::from("/run/netns").join(&server);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        lab::enter(&srv_ns).unwrap();
        let l = std::net::TcpListener::bind(("0.0.0.0", 2222)).unwrap();
        ready_tx.send(()).unwrap();
        for c in l.incoming() {
            drop(c);
        }
    });
    ready_rx.recv().unwrap();
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    let d = daemon_bin();
    lab.spawn(
        &server,
        &[d.to_str().unwrap(), "run", "--config", conf.to_str().unwrap()],
        Stdio::null(),
        Stdio::from(log),
    )
    .unwrap();
    let t = Instant::now();
    while !sock.exists() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));

    // 1. allow → reachable.
    let srv: SocketAddr = SocketAddr::new(lab::SERVER4.parse().unwrap(), 2222);
    let client = lab.client.clone();
    let ns_path = PathBuf::from("/run/netns").join(&client);
    let prober = {
        |n: usize| -> Vec<Duration> {
            let path = ns_path.clone();
            // A thread in the client namespace that probes until open after each start signal.
            let (start_tx, start_rx) = std::sync::mpsc::channel::<Instant>();
            let (done_tx, done_rx) = std::sync::mpsc::channel::<Duration>();
            let h = std::thread::spawn(move || {
                lab::enter(&path).unwrap();
                while let Ok(t0) = start_rx.recv() {
                    loop {
                        if lab::probe(srv, Duration::from_millis(20)) == Probe::Open {
                            done_tx.send(t0.elapsed()).unwrap();
                            break;
                        }
                        if t0.elapsed() > Duration::from_secs(2) {
                            done_tx.send(Duration::from_secs(99)).unwrap();
                            break;
                        }
                    }
                }
            });
            let mut api = Vec::new();
            let mut reach = Vec::new();
            for _ in 0..n {
                let t0 = Instant::now();
                let (st, v) = rt.block_on(call(
                    &sock,
                    "POST",
                    "/v1/grants",
                    Some(json!({"address": lab::CLIENT4, "ports": [2222], "duration": 60})),
                ));
                assert_eq!(st, 201, "{v}");
                api.push(t0.elapsed());
                start_tx.send(t0).unwrap();
                reach.push(done_rx.recv().unwrap());
                let id = v["grants"][0]["id"].as_i64().unwrap();
                let (st, _) = rt.block_on(call(&sock, "DELETE", &format!("/v1/grants/{id}"), None));
                assert_eq!(st, 200);
            }
            drop(start_tx);
            h.join().unwrap();
            println!("allow API round trip (unix socket):   {}", pct(api));
            reach
        }
    };
    let reach = prober(200);
    println!("allow → port reachable from client:   {}", pct(reach));

    // 2. concurrency: 1000 distinct allow+revoke, and 200 allows of one key.
    let t0 = Instant::now();
    let results: Vec<(u16, u16, i64)> = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..1000u32 {
            let sock = sock.clone();
            set.spawn(async move {
                let addr = IpAddr::from([10, 77, (i >> 8) as u8, i as u8]);
                let (st, v) = call(
                    &sock,
                    "POST",
                    "/v1/grants",
                    Some(json!({"address": addr.to_string(), "ports": [2222], "duration": 300})),
                )
                .await;
                let id = v["grants"][0]["id"].as_i64().unwrap_or(-1);
                let (st2, _) = call(&sock, "DELETE", &format!("/v1/grants/{id}"), None).await;
                (st, st2, id)
            });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            out.push(r.unwrap());
        }
        out
    });
    let took = t0.elapsed();
    let ok = results.iter().filter(|r| r.0 == 201 && r.1 == 200).count();
    let mut ids: Vec<i64> = results.iter().map(|r| r.2).collect();
    ids.sort();
    ids.dedup();
    let (_, v) = rt.block_on(call(&sock, "GET", "/v1/grants?address=10.77.0.1&per_page=10", None));
    let one = v["total"].as_u64();
    let (_, v) = rt.block_on(call(&sock, "GET", "/v1/grants?state=revoked&origin=api&per_page=1", None));
    let revoked = v["total"].as_u64().unwrap_or(0);
    let (_, v) = rt.block_on(call(&sock, "GET", "/v1/grants?state=active&per_page=1", None));
    let active = v["total"].as_u64().unwrap_or(0);
    let nft = lab.exec(&lab.server, &["nft", "list", "set", "inet", "portcullis", "allow4"]).unwrap();
    let left = String::from_utf8_lossy(&nft.stdout).matches("10.77.").count();
    println!(
        "1000 concurrent allow+revoke: {ok}/1000 ok in {:.2}s, {} distinct ids, per-address records for 10.77.0.1: {one:?}, \
         revoked records {revoked} (incl. 200 from part 1), active {active}, left in nft: {left}",
        took.as_secs_f64(),
        ids.len()
    );
    let same: Vec<i64> = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..200 {
            let sock = sock.clone();
            set.spawn(async move {
                let (_, v) = call(
                    &sock,
                    "POST",
                    "/v1/grants",
                    Some(json!({"address": "10.78.0.1", "ports": [2222], "duration": 300})),
                )
                .await;
                v["grants"][0]["id"].as_i64().unwrap_or(-1)
            });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            out.push(r.unwrap());
        }
        out
    });
    let mut distinct = same.clone();
    distinct.sort();
    distinct.dedup();
    let (_, v) = rt.block_on(call(&sock, "GET", "/v1/grants?address=10.78.0.1", None));
    println!(
        "200 concurrent allows of one key: {} distinct record id(s), {} record(s), refresh_count {}",
        distinct.len(),
        v["total"],
        v["items"][0]["refresh_count"]
    );
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
}

fn list_bench(rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grants.db");
    // Seed 100,000 records straight through the store's SQL layer (1000 transactions of 100).
    {
        let mut c = rusqlite::Connection::open(&path).unwrap();
        store::db::configure(&c).unwrap();
        store::db::migrate(&mut c).unwrap();
        let t = Instant::now();
        let now = clock::SystemClock.now_ms();
        let mut expired = Vec::new();
        for i in 0..1000u32 {
            let g = NewGrants {
                origin: Origin {
                    kind: if i % 3 == 0 { OriginKind::Door } else { OriginKind::Api },
                    detail: "seed".into(),
                },
                addr: IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
                len: 32,
                services: (1..=100).map(Service::tcp).collect(),
                requested_at: now,
                effective_at: now,
                duration: Duration::from_secs(if i % 10 == 0 { 86_400 } else { 1 }),
                driver: "none",
                result: Ok(()),
            };
            for r in store::db::record(&mut c, &g).unwrap() {
                if r.duration_ms < 5_000 {
                    let (target, state) = (CloseTarget::Id(r.id), GrantState::Expired);
                    expired.push(Closing { target, state, by: None, at: r.expires_at });
                }
            }
        }
        let seeded = t.elapsed();
        let n = store::db::close(&mut c, &expired).unwrap().len();
        println!("seeded 100000 records in {:.2}s; {n} marked expired", seeded.as_secs_f64());
    }
    let s = Store::open(&path, store::Options::default()).unwrap();
    let driver = firewall::Shared::new(Box::new(NoFirewall::default()));
    let granter = Granter::new(driver, vec![Service::tcp(22)], Ok(s), clock::system()).unwrap();
    let tokens = Tokens::parse(&format!("bench {TOKEN}\n")).unwrap();
    let state = AppState::new(granter, tokens, Duration::from_secs(600), Duration::from_secs(60));
    let (app, _) = api::router(state);
    for q in [
        "/v1/grants?per_page=100",
        "/v1/grants?per_page=100&page=500",
        "/v1/grants?per_page=1000",
        "/v1/grants?state=active&per_page=100",
        "/v1/grants?address=10.0.1.244",
        "/v1/grants?origin=door&state=expired&per_page=100",
        "/metrics",
    ] {
        let mut v = Vec::new();
        for _ in 0..50 {
            let req = Request::get(q)
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap();
            let t = Instant::now();
            let resp = rt.block_on(app.clone().oneshot(req)).unwrap();
            assert_eq!(resp.status(), 200, "{q}");
            let body = rt.block_on(axum::body::to_bytes(resp.into_body(), 1 << 26)).unwrap();
            v.push(t.elapsed());
            if v.len() == 1 && q.starts_with("/v1") {
                let j: Value = serde_json::from_slice(&body).unwrap();
                print!("[total {} items {}] ", j["total"], j["items"].as_array().map_or(0, Vec::len));
            }
        }
        println!("{q:<52} {}", pct(v));
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let only = std::env::args().nth(1).unwrap_or_default();
    if only.is_empty() || only == "list" {
        list_bench(&rt);
    }
    if only.is_empty() || only == "lab" {
        lab_benches(&rt);
    }
}
