//! `portcullis grants list|show|allow|revoke`: the daemon's grants API, over its unix
//! socket (default) or `--url http://127.0.0.1:PORT`.
//!
//! HTTP client choice: hyper 1's connection-level client (`client::conn::http1`) over a
//! tokio `UnixStream`/`TcpStream`. hyper is already in the workspace (axum serves the API
//! with it), it is the most used HTTP implementation in Rust, and speaking over a unix
//! socket needs no extra connector crate: we hand it the connected stream. A pooled
//! client (hyper-util's legacy `Client`) would need a custom connector for unix
//! sockets and buys nothing for one request per run; ureq would add a second HTTP stack.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// Default API socket (the daemon's `[api] socket` default).
pub const DEFAULT_SOCKET: &str = "/run/portcullis/api.sock";
/// Default token file: the daemon's tokens file, readable by root on the server.
pub const DEFAULT_TOKEN_FILE: &str = "/etc/portcullis/api.tokens";

#[derive(Args, Debug)]
pub struct GrantsArgs {
    /// The API's unix socket.
    #[arg(long, default_value = DEFAULT_SOCKET, global = true)]
    socket: PathBuf,
    /// Use the loopback TCP API instead: http://127.0.0.1:PORT.
    #[arg(long, global = true)]
    url: Option<String>,
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
        #[arg(long)]
        state: Option<String>,
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
        #[arg(required = true)]
        services: Vec<String>,
        /// Seconds (default: the daemon's default_duration; capped at its max_duration).
        #[arg(long = "for")]
        duration: Option<u64>,
    },
    /// Revoke grants by id (closes them in the firewall at once).
    Revoke {
        /// Record ids.
        #[arg(required = true)]
        ids: Vec<i64>,
    },
}

/// Where the API is.
enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

fn endpoint(a: &GrantsArgs) -> anyhow::Result<Endpoint> {
    match &a.url {
        None => Ok(Endpoint::Unix(a.socket.clone())),
        Some(u) => {
            let rest = u.strip_prefix("http://").ok_or_else(|| anyhow!("--url must be http://HOST:PORT"))?;
            let authority = rest.split('/').next().unwrap_or("");
            if authority.is_empty() || !authority.contains(':') {
                bail!("--url must be http://HOST:PORT, with the port");
            }
            Ok(Endpoint::Tcp(authority.to_string()))
        }
    }
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

/// One HTTP exchange: status and parsed JSON body.
async fn call(
    ep: &Endpoint,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(StatusCode, Value)> {
    let body_bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "localhost")
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(hyper::header::USER_AGENT, concat!("portcullis-cli/", env!("CARGO_PKG_VERSION")));
    if !body_bytes.is_empty() {
        req = req.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body_bytes)))?;
    let resp = match ep {
        Endpoint::Unix(p) => {
            let s = tokio::net::UnixStream::connect(p).await.with_context(|| {
                format!("connecting to {} (is portcullisd running with [api]?)", p.display())
            })?;
            send(s, req).await?
        }
        Endpoint::Tcp(a) => {
            let s = tokio::net::TcpStream::connect(a.as_str())
                .await
                .with_context(|| format!("connecting to {a}"))?;
            send(s, req).await?
        }
    };
    let status = resp.0;
    let v = if resp.1.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&resp.1).map_err(|e| anyhow!("API answered {status} with non-JSON ({e})"))?
    };
    Ok((status, v))
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

fn fail(status: StatusCode, v: &Value) -> anyhow::Error {
    let code = v["error"].as_str().unwrap_or("error");
    let msg = v["message"].as_str().unwrap_or("");
    anyhow!("API error {}: {code}: {msg}", status.as_u16())
}

/// Keep table cells on one line and free of terminal control characters.
fn cell(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn print_table(items: &[Value]) {
    println!(
        "{:>6}  {:<8} {:<39} {:<10} {:<20} {:<24} {:>6}",
        "ID", "STATE", "ADDRESS", "SERVICE", "ORIGIN", "EXPIRES", "LEFT"
    );
    for g in items {
        let service = format!("{}/{}", cell(&g["protocol"]), cell(&g["port"]));
        let origin = format!("{}:{}", cell(&g["origin"]["kind"]), cell(&g["origin"]["detail"]));
        let left =
            if g["state"] == "active" { format!("{}s", cell(&g["remaining_seconds"])) } else { "-".into() };
        println!(
            "{:>6}  {:<8} {:<39} {:<10} {:<20} {:<24} {:>6}",
            cell(&g["id"]),
            cell(&g["state"]),
            cell(&g["address"]),
            service,
            origin,
            cell(&g["expires_at"]),
            left
        );
    }
}

fn print_one(g: &Value) {
    if let Some(obj) = g.as_object() {
        for (k, v) in obj {
            let text = if let Value::Object(o) = v {
                o.iter().map(|(a, b)| format!("{a}={}", cell(b))).collect::<Vec<_>>().join(" ")
            } else {
                cell(v)
            };
            println!("{k:>18}: {text}");
        }
    }
}

/// Parse `tcp/22`, `udp/53` or `22` into (protocol, port).
fn parse_service(s: &str) -> anyhow::Result<(&'static str, u16)> {
    let (proto, port) = match s.split_once('/') {
        Some((p, n)) => (p, n),
        None => ("tcp", s),
    };
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" => "tcp",
        "udp" => "udp",
        _ => bail!("{s:?}: protocol must be tcp or udp"),
    };
    let port: u16 =
        port.parse().ok().filter(|&p| p != 0).ok_or_else(|| anyhow!("{s:?}: port must be 1..65535"))?;
    Ok((proto, port))
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
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
    let q: Vec<String> =
        pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", enc(v)))).collect();
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

pub fn run(a: &GrantsArgs) -> anyhow::Result<()> {
    let ep = endpoint(a)?;
    let token = token(a)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run_async(a, &ep, &token))
}

async fn run_async(a: &GrantsArgs, ep: &Endpoint, token: &str) -> anyhow::Result<()> {
    match &a.command {
        GrantsCommand::List { state, address, origin, page, per_page } => {
            let q = query(&[
                ("state", state.clone()),
                ("address", address.clone()),
                ("origin", origin.clone()),
                ("page", Some(page.to_string())),
                ("per_page", Some(per_page.to_string())),
            ]);
            let (status, v) = call(ep, token, Method::GET, &format!("/v1/grants{q}"), None).await?;
            output(a, status, &v, |v| {
                print_table(v["items"].as_array().map(Vec::as_slice).unwrap_or(&[]));
                println!("page {} of {} record(s)", cell(&v["page"]), cell(&v["total"]));
            })
        }
        GrantsCommand::Show { id } => {
            let (status, v) = call(ep, token, Method::GET, &format!("/v1/grants/{id}"), None).await?;
            output(a, status, &v, print_one)
        }
        GrantsCommand::Allow { address, services, duration } => {
            let mut by_proto: Vec<(&str, Vec<u16>)> = Vec::new();
            for s in services {
                let (p, n) = parse_service(s)?;
                match by_proto.iter_mut().find(|(q, _)| *q == p) {
                    Some((_, ports)) => ports.push(n),
                    None => by_proto.push((p, vec![n])),
                }
            }
            let mut all = Vec::new();
            for (proto, ports) in by_proto {
                let mut body = json!({"address": address, "protocol": proto, "ports": ports});
                if let Some(d) = duration {
                    body["duration"] = json!(d);
                }
                let (status, v) = call(ep, token, Method::POST, "/v1/grants", Some(body)).await?;
                if !status.is_success() {
                    return output(a, status, &v, |_| {});
                }
                for w in v["warnings"].as_array().into_iter().flatten() {
                    eprintln!("portcullis: warning: {}", cell(w));
                }
                all.push(v);
            }
            if a.json {
                println!("{}", if all.len() == 1 { all[0].clone() } else { Value::Array(all) });
            } else {
                let items: Vec<Value> =
                    all.iter().flat_map(|v| v["grants"].as_array().cloned().unwrap_or_default()).collect();
                print_table(&items);
            }
            Ok(())
        }
        GrantsCommand::Revoke { ids } => {
            let mut failed = 0;
            for id in ids {
                let (status, v) = call(ep, token, Method::DELETE, &format!("/v1/grants/{id}"), None).await?;
                if a.json {
                    println!("{v}");
                } else if status.is_success() {
                    println!(
                        "revoked #{id}: {} {}/{} for {}",
                        cell(&v["address"]),
                        cell(&v["protocol"]),
                        cell(&v["port"]),
                        cell(&v["origin"]["detail"])
                    );
                } else {
                    eprintln!("portcullis: #{id}: {}", fail(status, &v));
                }
                if !status.is_success() {
                    failed += 1;
                }
            }
            if failed > 0 {
                bail!("{failed} of {} revoke(s) failed", ids.len());
            }
            Ok(())
        }
    }
}

fn output(a: &GrantsArgs, status: StatusCode, v: &Value, human: impl FnOnce(&Value)) -> anyhow::Result<()> {
    if a.json {
        println!("{v}");
    } else if status.is_success() {
        human(v);
    }
    if status.is_success() {
        Ok(())
    } else {
        Err(fail(status, v))
    }
}

/// For tests: the token picked from a file's text.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_tokens_and_parses_services() {
        assert_eq!(pick_token("# c\nabcdef\n", None).unwrap(), "abcdef");
        assert_eq!(pick_token("alice aaa\nbob bbb\n", None).unwrap(), "aaa");
        assert_eq!(pick_token("alice aaa\nbob bbb\n", Some("bob")).unwrap(), "bbb");
        assert!(pick_token("alice aaa\n", Some("carol")).is_err());
        assert_eq!(parse_service("tcp/22").unwrap(), ("tcp", 22));
        assert_eq!(parse_service("UDP/53").unwrap(), ("udp", 53));
        assert_eq!(parse_service("2222").unwrap(), ("tcp", 2222));
        assert!(
            parse_service("icmp/1").is_err()
                && parse_service("tcp/0").is_err()
                && parse_service("x").is_err()
        );
        assert_eq!(query(&[("a", Some("x y".into())), ("b", None)]), "?a=x%20y");
    }

    #[test]
    fn url_must_be_plain_http_with_a_port() {
        let a = |url: &str| GrantsArgs {
            socket: PathBuf::from(DEFAULT_SOCKET),
            url: Some(url.into()),
            token_file: PathBuf::from(DEFAULT_TOKEN_FILE),
            token_name: None,
            json: false,
            command: GrantsCommand::Show { id: 1 },
        };
        assert!(
            matches!(endpoint(&a("http://127.0.0.1:8080")).unwrap(), Endpoint::Tcp(s) if s == "127.0.0.1:8080")
        );
        assert!(matches!(endpoint(&a("http://[::1]:8080/")).unwrap(), Endpoint::Tcp(s) if s == "[::1]:8080"));
        assert!(endpoint(&a("https://127.0.0.1:8080")).is_err());
        assert!(endpoint(&a("http://127.0.0.1")).is_err());
    }
}
