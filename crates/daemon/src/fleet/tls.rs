//! TLS to the fleet database, as libpq spells it in the URL: `sslmode` (`disable`,
//! `prefer`, `require`, `verify-ca`, `verify-full`) and `sslrootcert` (a PEM file of
//! the CAs to trust). The postgres crate does not read `sslrootcert` nor the `verify-*`
//! modes, so they are taken out of the URL here and applied to an OpenSSL connector.
//!
//! Without `sslmode` the connection is plain (a unix socket or a private network);
//! `require` encrypts without checking the server's certificate (libpq's meaning);
//! `verify-ca` checks the chain, `verify-full` the chain and the host name.

use std::path::PathBuf;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;

/// What the URL asks of TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain (no `sslmode`, or `disable`).
    Off,
    /// TLS if the server offers it, unverified.
    Prefer,
    /// TLS, unverified.
    Require,
    /// TLS, the chain verified (not the host name).
    VerifyCa,
    /// TLS, the chain and the host name verified.
    VerifyFull,
}

/// A URL split into what the postgres crate reads and the TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbUrl {
    /// The URL without `sslrootcert` and with `verify-*` as `require`.
    pub conn: String,
    /// The TLS mode.
    pub mode: TlsMode,
    /// CAs to trust (default: the system's).
    pub root_cert: Option<PathBuf>,
}

fn mode(v: &str) -> Result<TlsMode, String> {
    Ok(match v {
        "disable" => TlsMode::Off,
        "prefer" | "allow" => TlsMode::Prefer,
        "require" => TlsMode::Require,
        "verify-ca" => TlsMode::VerifyCa,
        "verify-full" => TlsMode::VerifyFull,
        other => {
            return Err(format!(
                "sslmode {:?}: use disable, prefer, require, verify-ca or verify-full",
                other.chars().take(32).collect::<String>()
            ))
        }
    })
}

/// What the postgres crate gets for a mode.
fn crate_mode(m: &TlsMode) -> &'static str {
    match m {
        TlsMode::Off => "disable",
        TlsMode::Prefer => "prefer",
        _ => "require",
    }
}

/// Split `url` (`postgres://...?k=v&...` or `k=v k=v`). Quoted key=value settings are
/// passed through untouched unless they are TLS ones, which must be unquoted.
pub fn split(url: &str) -> Result<DbUrl, String> {
    let (mut mode_v, mut root) = (TlsMode::Off, None);
    let mut take = |k: &str, v: &str| -> Result<bool, String> {
        match k {
            "sslmode" => mode_v = mode(v)?,
            "sslrootcert" if !v.is_empty() => root = Some(PathBuf::from(v)),
            "sslrootcert" => return Err("sslrootcert is empty".into()),
            _ => return Ok(false),
        }
        Ok(true)
    };
    let conn = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = v.replace("%2F", "/").replace("%2f", "/");
            if !take(k, &v)? {
                kept.push(pair.to_owned());
            }
        }
        if mode_v != TlsMode::Off {
            kept.push(format!("sslmode={}", crate_mode(&mode_v)));
        }
        if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else {
        let mut kept = Vec::new();
        for word in url.split_ascii_whitespace() {
            let (k, v) = word.split_once('=').unwrap_or((word, ""));
            if matches!(k, "sslmode" | "sslrootcert") && v.starts_with('\'') {
                return Err(format!("{k}: write the value without quotes"));
            }
            if !take(k, v)? {
                kept.push(word.to_owned());
            }
        }
        if mode_v != TlsMode::Off {
            kept.push(format!("sslmode={}", crate_mode(&mode_v)));
        }
        kept.join(" ")
    };
    if root.is_some() && !matches!(mode_v, TlsMode::VerifyCa | TlsMode::VerifyFull) {
        return Err("sslrootcert needs sslmode=verify-ca or verify-full".into());
    }
    Ok(DbUrl { conn, mode: mode_v, root_cert: root })
}

/// The OpenSSL connector for `u` (`None` for plain connections).
pub fn connector(u: &DbUrl) -> Result<Option<MakeTlsConnector>, String> {
    if u.mode == TlsMode::Off {
        return Ok(None);
    }
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| format!("TLS: {e}"))?;
    match &u.root_cert {
        Some(p) => b.set_ca_file(p).map_err(|e| format!("sslrootcert {}: {e}", p.display()))?,
        None => b.set_default_verify_paths().map_err(|e| format!("TLS: {e}"))?,
    }
    if matches!(u.mode, TlsMode::Prefer | TlsMode::Require) {
        b.set_verify(SslVerifyMode::NONE);
    }
    let mut c = MakeTlsConnector::new(b.build());
    if u.mode != TlsMode::VerifyFull {
        c.set_callback(|cfg, _| {
            cfg.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok(Some(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms_keep_what_postgres_reads_and_take_tls() {
        let u =
            split("postgresql://u:p@db/fleet?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x")
                .unwrap();
        assert_eq!(u.conn, "postgresql://u:p@db/fleet?application_name=x&sslmode=require");
        assert_eq!((u.mode, u.root_cert.unwrap()), (TlsMode::VerifyFull, PathBuf::from("/etc/ca.pem")));
        let u = split("host=db user=u sslmode=require dbname=f").unwrap();
        assert_eq!((u.conn.as_str(), u.mode), ("host=db user=u dbname=f sslmode=require", TlsMode::Require));
        let u = split("postgres://u@db/f").unwrap();
        assert_eq!((u.conn.as_str(), u.mode), ("postgres://u@db/f", TlsMode::Off));
        assert!(split("postgres://db/f?sslmode=verify").unwrap_err().contains("sslmode"));
        assert!(split("host=db sslrootcert=/ca.pem").unwrap_err().contains("verify"));
        assert!(split("host=db sslmode='require'").unwrap_err().contains("quotes"));
        assert!(crate::fleet::db::check("host=db sslmode=verify-ca sslrootcert=/nonexistent/ca.pem").is_err());
        assert!(crate::fleet::db::check("host=db sslmode=require").is_ok());
        assert!(crate::fleet::db::check("postgres://db:notaport/f").is_err());
    }
}
