//! `portcullis grants list|show|allow|revoke`: the daemon's grants API, over its unix
//! socket (default) or `--url http://127.0.0.1:PORT`.
//!
//! HTTP client choice: hyper 1's connection-level client (`client::conn::http1`) over a
//! tokio `UnixStream`/`TcpStream`. hyper is already in the workspace (axum serves the API
//! with it), it is the most used HTTP implementation in Rust, and speaking over a unix
//! socket needs no extra connector crate: we hand it the connected stream. A pooled
//! client (hyper-util's legacy `Client`) would need a custom connector for unix
//! sockets and buys nothing for one request per run; ureq would add a second HTTP stack.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use portcullis_api::{
    CreateGrant, Created, ErrorBody, GrantPage, GrantState, GrantView, ListQuery, Protocol, Scope,
    CLI_USER_AGENT_PREFIX,
};
use portcullis_proto::addr::canonical;
use portcullis_proto::Service;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Default API socket (the daemon's `[api] socket` default).
pub const DEFAULT_SOCKET: &str = "/run/portcullis/api.sock";
/// Default token file: the daemon's tokens file, readable by root on the server.
pub const DEFAULT_TOKEN_FILE: &str = "/etc/portcullis/api.tokens";

#[derive(Args, Debug)]
pub struct GrantsArgs {
    /// The API's unix socket.
    #[arg(long, default_value = DEFAULT_SOCKET, global = true)]
    socket: PathBuf,
    /// Use the TCP API instead: http://127.0.0.1:PORT. Loopback only, since the token
    /// travels in clear text; see --insecure-allow-remote.
    #[arg(long, global = true)]
    url: Option<String>,
    /// Let --url name a host that is not loopback, sending the token unencrypted over
    /// the network (only on a network you trust; an SSH tunnel is better).
    #[arg(long, global = true)]
    insecure_allow_remote: bool,
    /// File with the bearer token: a lone token, or `name token` lines (the first, or
    /// the one named by --token-name). $PORTCULLIS_TOKEN overrides it.
    #[arg(long, default_value = DEFAULT_TOKEN_FILE, global = true)]
    token_file: PathBuf,
    /// Which `name token` line of the token file to use.
    #[arg(long, global = true)]
    token_name: Option<String>,
    /// Print the API's JSON instead of a table (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: GrantsCommand,
}

#[derive(Subcommand, Debug)]
enum GrantsCommand {
    /// List grant records, newest first.
    List {
        /// active, expired, revoked or failed.
        #[arg(long, value_parser = parse_state)]
        state: Option<GrantState>,
        /// Only this address.
        #[arg(long)]
        address: Option<String>,
        /// door, spa, api, cli, or KIND:DETAIL (door:ssh).
        #[arg(long)]
        origin: Option<String>,
        /// Page (1-based).
        #[arg(long, default_value_t = 1)]
        page: u64,
        /// Records per page (1-1000).
        #[arg(long, default_value_t = 50)]
        per_page: u64,
        /// The fleet's live grants (fleet mode), with the node that made each.
        #[arg(long)]
        fleet: bool,
    },
    /// Show one record.
    Show {
        /// Record id.
        id: i64,
    },
    /// Open services for an address: `portcullis grants allow 192.0.2.2 tcp/22 udp/51820 --for 300`.
    Allow {
        /// Address to let in.
        address: String,
        /// Services: tcp/22, udp/53, or a bare port for TCP.
        #[arg(required = true, value_parser = parse_service)]
        services: Vec<Service>,
        /// Seconds (default: the daemon's default_duration; capped at its max_duration).
        #[arg(long = "for")]
        duration: Option<u64>,
        /// Open it on every node of the fleet too (fleet mode).
        #[arg(long)]
        fleet: bool,
    },
    /// Revoke grants by id (closes them in the firewall at once).
    Revoke {
        /// Record ids (with --fleet: fleet ids, as `list --fleet` shows).
        #[arg(required = true)]
        ids: Vec<i64>,
        /// The ids are fleet grants': close them on every node of the fleet.
        #[arg(long)]
        fleet: bool,
    },
}

fn parse_state(s: &str) -> Result<GrantState, String> {
    GrantState::parse(s).ok_or_else(|| "expected active, expired, revoked or failed".to_string())
}

/// Where the API is.
#[derive(Debug, PartialEq, Eq)]
enum Endpoint {
    Unix(PathBuf),
    /// The addresses the host resolved to (checked, and the only ones connected to).
    Tcp(Vec<SocketAddr>),
}

/// The endpoint, refusing to send the token in clear text off this machine unless
/// told to: the loopback check runs on the resolved addresses, which are the ones
/// connected to, so a name cannot point elsewhere between check and use.
fn endpoint(a: &GrantsArgs) -> anyhow::Result<Endpoint> {
    let Some(u) = &a.url else { return Ok(Endpoint::Unix(a.socket.clone())) };
    if u.starts_with("https://") {
        bail!(
            "--url {u}: portcullis grants speaks plain HTTP only (the daemon serves no TLS); \
             for a remote daemon, tunnel to its loopback port: ssh -L 8080:127.0.0.1:8080 HOST, \
             then --url http://127.0.0.1:8080"
        );
    }
    let rest = u.strip_prefix("http://").ok_or_else(|| anyhow!("--url must be http://HOST:PORT"))?;
    let authority = rest.split('/').next().unwrap_or("");
    let port_given = authority.rsplit_once(':').is_some_and(|(h, p)| !p.is_empty() && !h.ends_with(':'));
    if authority.is_empty() || !port_given {
        bail!("--url must be http://HOST:PORT, with the port");
    }
    let addrs: Vec<SocketAddr> =
        authority.to_socket_addrs().with_context(|| format!("--url: cannot resolve {authority}"))?.collect();
    let remote: Vec<String> =
        addrs.iter().filter(|s| !canonical(s.ip()).is_loopback()).map(|s| s.ip().to_string()).collect();
    if addrs.is_empty() {
        bail!("--url: {authority} resolves to no address");
    }
    if !remote.is_empty() && !a.insecure_allow_remote {
        bail!(
            "refusing to send the API token in clear text to {authority} ({} is not loopback); \
             use the unix socket (--socket), or tunnel to the daemon's loopback port: \
             ssh -L 8080:127.0.0.1:8080 HOST, then --url http://127.0.0.1:8080 \
             (--insecure-allow-remote sends it anyway)",
            remote.join(", ")
        );
    }
    Ok(Endpoint::Tcp(addrs))
}

/// The token: $PORTCULLIS_TOKEN, or from the token file.
fn token(a: &GrantsArgs) -> anyhow::Result<String> {
    if let Ok(t) = std::env::var("PORTCULLIS_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    let text = std::fs::read_to_string(&a.token_file).with_context(|| {
        format!("reading the token file {} (or set PORTCULLIS_TOKEN)", a.token_file.display())
    })?;
    pick_token(&text, a.token_name.as_deref()).with_context(|| a.token_file.display().to_string())
}

fn pick_token(text: &str, name: Option<&str>) -> anyhow::Result<String> {
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match (parts.as_slice(), name) {
            ([t], None) => return Ok(t.to_string()),
            ([_, t], None) => return Ok(t.to_string()),
            ([n, t], Some(want)) if n == &want => return Ok(t.to_string()),
            _ => {}
        }
    }
    match name {
        Some(n) => bail!("no token named {n}"),
        None => bail!("no token in the file"),
    }
}

/// One HTTP exchange: status and body.
async fn call(
    ep: &Endpoint,
    token: &str,
    method: Method,
    path: &str,
    body: Option<&impl Serialize>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let body_bytes = body.map(serde_json::to_vec).transpose()?.unwrap_or_default();
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "localhost")
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(hyper::header::USER_AGENT, format!("{CLI_USER_AGENT_PREFIX}{}", env!("CARGO_PKG_VERSION")));
    if !body_bytes.is_empty() {
        req = req.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body_bytes)))?;
    match ep {
        Endpoint::Unix(p) => {
            let s = tokio::net::UnixStream::connect(p).await.with_context(|| {
                format!("connecting to {} (is portcullisd running with [api]?)", p.display())
            })?;
            send(s, req).await
        }
        Endpoint::Tcp(addrs) => {
            let s = tokio::net::TcpStream::connect(addrs.as_slice())
                .await
                .with_context(|| format!("connecting to {}", addrs[0]))?;
            send(s, req).await
        }
    }
}

/// The API's answer: `T` on success, else its error body as an error.
fn decode<T: DeserializeOwned>(status: StatusCode, body: &[u8]) -> anyhow::Result<T> {
    if status.is_success() {
        serde_json::from_slice(body)
            .map_err(|e| anyhow!("API answered {status} with an unexpected body ({e})"))
    } else {
        Err(fail(status, body))
    }
}

async fn send<S>(stream: S, req: Request<Full<Bytes>>) -> anyhow::Result<(StatusCode, Bytes)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    drop(sender);
    let _ = driver.await;
    Ok((status, bytes))
}

fn fail(status: StatusCode, body: &[u8]) -> anyhow::Error {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => anyhow!("API error {}: {}: {}", status.as_u16(), clean(&e.error), clean(&e.message)),
        Err(_) => anyhow!("API error {} (no error body)", status.as_u16()),
    }
}

/// Keep table cells on one line and free of terminal control characters.
fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn or_dash(s: &Option<String>) -> String {
    s.as_deref().map_or_else(|| "-".into(), clean)
}

/// A table of records; with `node`, a NODE column (the fleet node that made each).
fn print_table(items: &[GrantView], node: bool) {
    let node_col = |n: &str| if node { format!("{n:<16} ") } else { String::new() };
    println!(
        "{:>6}  {}{:<8} {:<39} {:<10} {:<20} {:<24} {:>6}",
        "ID",
        node_col("NODE"),
        "STATE",
        "ADDRESS",
        "SERVICE",
        "ORIGIN",
        "EXPIRES",
        "LEFT"
    );
    for g in items {
        let left =
            if g.state == GrantState::Active { format!("{}s", g.remaining_seconds) } else { "-".into() };
        println!(
            "{:>6}  {}{:<8} {:<39} {:<10} {:<20} {:<24} {:>6}",
            g.id,
            node_col(&or_dash(&g.node)),
            g.state,
            g.source(),
            format!("{}/{}", g.protocol, g.port),
            format!("{}:{}", g.origin.kind, clean(&g.origin.detail)),
            clean(&g.expires_at),
            left
        );
    }
}

fn print_one(g: &GrantView) {
    let rows: [(&str, String); 18] = [
        ("id", g.id.to_string()),
        ("origin", format!("{}:{}", g.origin.kind, clean(&g.origin.detail))),
        ("address", g.source()),
        ("protocol", g.protocol.to_string()),
        ("port", g.port.to_string()),
        ("state", g.state.to_string()),
        ("requested_at", clean(&g.requested_at)),
        ("effective_at", or_dash(&g.effective_at)),
        ("expires_at", clean(&g.expires_at)),
        ("remaining_seconds", g.remaining_seconds.to_string()),
        ("duration_seconds", g.duration_seconds.to_string()),
        ("revoked_by", or_dash(&g.revoked_by)),
        ("closed_at", or_dash(&g.closed_at)),
        ("driver", clean(&g.driver)),
        ("driver_result", clean(&g.driver_result)),
        ("refresh_count", g.refresh_count.to_string()),
        ("refreshed_at", or_dash(&g.refreshed_at)),
        ("node", or_dash(&g.node)),
    ];
    for (k, v) in rows {
        println!("{k:>18}: {v}");
    }
}

/// Parse `tcp/22`, `udp/53` or `22` (TCP).
fn parse_service(s: &str) -> Result<Service, String> {
    if s.contains('/') {
        Service::parse_grant(s).map_err(|e| e.to_string())
    } else {
        Service::parse_knock(s, portcullis_proto::Proto::Tcp)
            .map_err(|_| "expected tcp/PORT, udp/PORT or a bare port (TCP), PORT 1-65535".to_string())
    }
}

/// `?k=v&...` for the fields of a query struct that are set.
fn query(q: &impl Serialize) -> anyhow::Result<String> {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~:".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    let serde_json::Value::Object(fields) = serde_json::to_value(q)? else { bail!("a query is an object") };
    let pairs: Vec<String> = fields
        .iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={}", enc(s)),
            other => format!("{k}={}", enc(&other.to_string())),
        })
        .collect();
    Ok(if pairs.is_empty() { String::new() } else { format!("?{}", pairs.join("&")) })
}

pub fn run(a: &GrantsArgs) -> anyhow::Result<()> {
    let ep = endpoint(a)?;
    let token = token(a)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run_async(a, &ep, &token))
}

async fn run_async(a: &GrantsArgs, ep: &Endpoint, token: &str) -> anyhow::Result<()> {
    match &a.command {
        GrantsCommand::List { state, address, origin, page, per_page, fleet } => {
            let q = ListQuery {
                state: *state,
                address: address.clone(),
                origin: origin.clone(),
                page: Some(*page),
                per_page: Some(*per_page),
                scope: fleet.then_some(Scope::Fleet),
            };
            let path = format!("/v1/grants{}", query(&q)?);
            let (status, body) = call(ep, token, Method::GET, &path, None::<&()>).await?;
            output(a, status, &body, |p: GrantPage| {
                print_table(&p.items, *fleet);
                println!("page {} of {} record(s)", p.page, p.total);
            })
        }
        GrantsCommand::Show { id } => {
            let (status, body) =
                call(ep, token, Method::GET, &format!("/v1/grants/{id}"), None::<&()>).await?;
            output(a, status, &body, |g: GrantView| print_one(&g))
        }
        GrantsCommand::Allow { address, services, duration, fleet } => {
            let mut requests: Vec<CreateGrant> = Vec::new();
            for s in services {
                let protocol = Some(Protocol::from(s.proto));
                match requests.iter_mut().find(|r| r.protocol == protocol) {
                    Some(r) => r.ports.push(i64::from(s.port)),
                    None => requests.push(CreateGrant {
                        address: address.clone(),
                        protocol,
                        ports: vec![i64::from(s.port)],
                        duration: duration.map(|d| i64::try_from(d).unwrap_or(i64::MAX)),
                        scope: fleet.then_some(Scope::Fleet),
                    }),
                }
            }
            let mut raw = Vec::new();
            let mut granted = Vec::new();
            for req in &requests {
                let (status, body) = call(ep, token, Method::POST, "/v1/grants", Some(req)).await?;
                if !status.is_success() {
                    return output(a, status, &body, |_: serde::de::IgnoredAny| {});
                }
                let created: Created = decode(status, &body)?;
                for w in &created.warnings {
                    eprintln!("portcullis: warning: {}", clean(w));
                }
                raw.push(body);
                granted.extend(created.grants);
            }
            if a.json {
                // One request's answer as the API gave it; several as a JSON array.
                match raw.as_slice() {
                    [one] => println!("{}", String::from_utf8_lossy(one)),
                    many => {
                        let parts: Vec<_> = many.iter().map(|b| String::from_utf8_lossy(b)).collect();
                        println!("[{}]", parts.join(","));
                    }
                }
            } else {
                print_table(&granted, false);
            }
            Ok(())
        }
        GrantsCommand::Revoke { ids, fleet } => {
            let mut failed = 0;
            let scope = if *fleet { "?scope=fleet" } else { "" };
            for id in ids {
                let (status, body) =
                    call(ep, token, Method::DELETE, &format!("/v1/grants/{id}{scope}"), None::<&()>).await?;
                if a.json {
                    println!("{}", String::from_utf8_lossy(&body));
                }
                match decode::<GrantView>(status, &body) {
                    Ok(g) if !a.json => println!(
                        "revoked #{id}: {} {}/{} for {}",
                        g.source(),
                        g.protocol,
                        g.port,
                        clean(&g.origin.detail)
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("portcullis: #{id}: {e}");
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} of {} revoke(s) failed", ids.len());
            }
            Ok(())
        }
    }
}

/// Print an answer: the API's JSON as it came with --json, else `human` of the typed
/// value; an error status is the command's error either way.
fn output<T: DeserializeOwned>(
    a: &GrantsArgs,
    status: StatusCode,
    body: &[u8],
    human: impl FnOnce(T),
) -> anyhow::Result<()> {
    if a.json {
        println!("{}", String::from_utf8_lossy(body));
    }
    let value = decode::<T>(status, body)?;
    if !a.json {
        human(value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_tokens_and_parses_services() {
        assert_eq!(pick_token("# c\nabcdef\n", None).unwrap(), "abcdef");
        assert_eq!(pick_token("alice aaa\nbob bbb\n", None).unwrap(), "aaa");
        assert_eq!(pick_token("alice aaa\nbob bbb\n", Some("bob")).unwrap(), "bbb");
        assert!(pick_token("alice aaa\n", Some("carol")).is_err());
        assert_eq!(parse_service("tcp/22").unwrap(), Service::tcp(22));
        assert_eq!(parse_service("UDP/53").unwrap(), Service::udp(53));
        assert_eq!(parse_service("2222").unwrap(), Service::tcp(2222));
        assert_eq!(parse_service("icmp/1").unwrap_err(), "protocol must be tcp or udp");
        assert_eq!(parse_service("tcp/0").unwrap_err(), "port must be a number from 1 to 65535");
        assert_eq!(
            parse_service("x").unwrap_err(),
            "expected tcp/PORT, udp/PORT or a bare port (TCP), PORT 1-65535"
        );
        assert_eq!(parse_state("revoked"), Ok(GrantState::Revoked));
        assert_eq!(parse_state("gone").unwrap_err(), "expected active, expired, revoked or failed");
    }

    #[test]
    fn queries_carry_the_set_filters_encoded() {
        let q = ListQuery {
            state: Some(GrantState::Active),
            origin: Some("door:my door".into()),
            page: Some(2),
            ..ListQuery::default()
        };
        assert_eq!(query(&q).unwrap(), "?origin=door:my%20door&page=2&state=active");
        assert_eq!(query(&ListQuery::default()).unwrap(), "");
    }

    #[test]
    fn error_bodies_become_the_message() {
        let body = br#"{"error":"conflict","message":"grant 3 is revoked\u001b[2J"}"#;
        let e = decode::<GrantView>(StatusCode::CONFLICT, body).unwrap_err();
        assert_eq!(e.to_string(), "API error 409: conflict: grant 3 is revoked?[2J");
        let e = decode::<GrantView>(StatusCode::BAD_GATEWAY, b"<html>").unwrap_err();
        assert_eq!(e.to_string(), "API error 502 (no error body)");
    }

    fn args(url: &str, insecure_allow_remote: bool) -> GrantsArgs {
        GrantsArgs {
            socket: PathBuf::from(DEFAULT_SOCKET),
            url: Some(url.into()),
            insecure_allow_remote,
            token_file: PathBuf::from(DEFAULT_TOKEN_FILE),
            token_name: None,
            json: false,
            command: GrantsCommand::Show { id: 1 },
        }
    }

    #[test]
    fn url_must_be_plain_http_with_a_port() {
        let tcp = |url: &str| endpoint(&args(url, false)).unwrap();
        assert_eq!(tcp("http://127.0.0.1:8080"), Endpoint::Tcp(vec!["127.0.0.1:8080".parse().unwrap()]));
        assert_eq!(tcp("http://[::1]:8080/"), Endpoint::Tcp(vec!["[::1]:8080".parse().unwrap()]));
        assert_eq!(tcp("http://127.8.9.10:1"), Endpoint::Tcp(vec!["127.8.9.10:1".parse().unwrap()]));
        let err = |url: &str| endpoint(&args(url, false)).unwrap_err().to_string();
        assert_eq!(err("http://127.0.0.1"), "--url must be http://HOST:PORT, with the port");
        assert_eq!(err("http://[::1]"), "--url must be http://HOST:PORT, with the port");
        assert_eq!(err("ftp://127.0.0.1:21"), "--url must be http://HOST:PORT");
    }

    #[test]
    fn the_token_is_not_sent_off_this_machine_in_clear_text() {
        let err = |url: &str| endpoint(&args(url, false)).unwrap_err().to_string();
        assert_eq!(
            err("http://192.0.2.10:8080"),
            "refusing to send the API token in clear text to 192.0.2.10:8080 (192.0.2.10 is not loopback); \
             use the unix socket (--socket), or tunnel to the daemon's loopback port: \
             ssh -L 8080:127.0.0.1:8080 HOST, then --url http://127.0.0.1:8080 \
             (--insecure-allow-remote sends it anyway)"
        );
        assert!(err("http://[2001:db8::1]:8080").contains("(2001:db8::1 is not loopback)"));
        // An IPv4-mapped loopback is loopback; a mapped remote address is not.
        assert!(endpoint(&args("http://[::ffff:127.0.0.1]:8080", false)).is_ok());
        assert!(err("http://[::ffff:192.0.2.10]:8080").contains("is not loopback"));
        assert_eq!(
            err("https://192.0.2.10:8443"),
            "--url https://192.0.2.10:8443: portcullis grants speaks plain HTTP only (the daemon serves no TLS); \
             for a remote daemon, tunnel to its loopback port: ssh -L 8080:127.0.0.1:8080 HOST, \
             then --url http://127.0.0.1:8080"
        );
        // Said explicitly, it is allowed (nothing is sent here: only resolved).
        assert_eq!(
            endpoint(&args("http://192.0.2.10:8080", true)).unwrap(),
            Endpoint::Tcp(vec!["192.0.2.10:8080".parse().unwrap()])
        );
    }
}
