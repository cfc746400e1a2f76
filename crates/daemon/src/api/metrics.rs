//! `/metrics`: Prometheus text format (0.0.4), same bearer auth as the rest.
//!
//! Engine counters come from the capture thread, published about once a second, so they
//! may lag by up to a second. Grant counts come from the store. Kernel-side capture drops
//! (`PACKET_STATISTICS`) are not exported: reading them needs a raw `getsockopt`, i.e.
//! `unsafe`, which this crate denies.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::{blocking, AppState};
use crate::grants::OriginKind;
use crate::spa::RejectClass;
use crate::store::GrantState;

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Render every metric.
pub async fn render(state: &AppState) -> String {
    let mut out = String::new();
    let g = &state.granter;
    let counts = match g.store() {
        Ok(store) => {
            let store = store.clone();
            blocking(move || store.counts()).await.ok().and_then(Result::ok)
        }
        Err(_) => None,
    };
    head(&mut out, "portcullis_store_up", "gauge", "1 if the grant store is open and answering.");
    let _ = writeln!(out, "portcullis_store_up {}", u8::from(counts.is_some()));
    let counts = counts.unwrap_or_default();
    let sum = |kind: OriginKind, state: Option<GrantState>| -> u64 {
        counts
            .iter()
            .filter(|(k, s, _)| k == kind.as_str() && state.is_none_or(|st| s == st.as_str()))
            .map(|(_, _, n)| n)
            .sum()
    };
    head(&mut out, "portcullis_grants_active", "gauge", "Active grants by origin.");
    for k in OriginKind::ALL {
        let _ = writeln!(
            out,
            "portcullis_grants_active{{origin=\"{}\"}} {}",
            k.as_str(),
            sum(k, Some(GrantState::Active))
        );
    }
    head(&mut out, "portcullis_grants_total", "counter", "Grant records by origin and state.");
    for k in OriginKind::ALL {
        for s in GrantState::ALL {
            let _ = writeln!(
                out,
                "portcullis_grants_total{{origin=\"{}\",state=\"{}\"}} {}",
                k.as_str(),
                s.as_str(),
                sum(k, Some(s))
            );
        }
    }
    let s = g.stats();
    head(&mut out, "portcullis_packets_total", "counter", "Sniffed packets handed to the engine.");
    let _ = writeln!(out, "portcullis_packets_total {}", s.packets);
    head(&mut out, "portcullis_knock_sequences_total", "counter", "Knock sequences by outcome.");
    let _ = writeln!(out, "portcullis_knock_sequences_total{{result=\"opened\"}} {}", s.knock_completed);
    let _ = writeln!(out, "portcullis_knock_sequences_total{{result=\"reset\"}} {}", s.knock_resets);
    let _ = writeln!(out, "portcullis_knock_sequences_total{{result=\"timeout\"}} {}", s.knock_timeouts);
    head(&mut out, "portcullis_spa_accepted_total", "counter", "SPA packets accepted.");
    let _ = writeln!(out, "portcullis_spa_accepted_total {}", s.spa_accepted);
    head(&mut out, "portcullis_spa_rejected_total", "counter", "SPA packets rejected, by reason.");
    for class in RejectClass::ALL {
        let _ =
            writeln!(out, "portcullis_spa_rejected_total{{reason=\"{class}\"}} {}", s.spa_rejected_in(class));
    }
    head(
        &mut out,
        "portcullis_grant_failures_total",
        "counter",
        "Grants the firewall refused (knock and SPA).",
    );
    let _ = writeln!(out, "portcullis_grant_failures_total {}", s.grant_failures);
    head(
        &mut out,
        "portcullis_opens_refused_total",
        "counter",
        "Door opens refused by a bound (opens_per_second, opens_per_prefix, max_live_grants).",
    );
    let _ = writeln!(out, "portcullis_opens_refused_total {}", s.opens_refused);
    head(
        &mut out,
        "portcullis_log_lines_suppressed_total",
        "counter",
        "Per-knock log lines dropped by the rate limit.",
    );
    let _ = writeln!(out, "portcullis_log_lines_suppressed_total {}", s.suppressed_logs);
    if let Ok(store) = g.store() {
        let c = store.counters();
        head(
            &mut out,
            "portcullis_store_dropped_total",
            "counter",
            "Grant records and closes dropped (store thread behind or stopped).",
        );
        let _ = writeln!(out, "portcullis_store_dropped_total {}", c.dropped.load(Ordering::Relaxed));
        head(&mut out, "portcullis_store_errors_total", "counter", "Store write failures (rolled back).");
        let _ = writeln!(out, "portcullis_store_errors_total {}", c.errors.load(Ordering::Relaxed));
    }
    head(&mut out, "portcullis_daemon_expired_total", "counter", "Grants closed by the daemon at expiry.");
    let expired = g.counters().daemon_expired.load(Ordering::Relaxed);
    let _ = writeln!(out, "portcullis_daemon_expired_total {expired}");
    let fw = g.firewall_state();
    head(
        &mut out,
        "portcullis_firewall_restores_total",
        "counter",
        "Rulesets reinstalled after someone else removed or changed them.",
    );
    let _ = writeln!(out, "portcullis_firewall_restores_total {}", fw.restores.load(Ordering::Relaxed));
    head(
        &mut out,
        "portcullis_firewall_repair_failures_total",
        "counter",
        "Repairs of the ruleset that failed.",
    );
    let _ = writeln!(
        out,
        "portcullis_firewall_repair_failures_total {}",
        fw.repair_failures.load(Ordering::Relaxed)
    );
    head(&mut out, "portcullis_firewall_ok", "gauge", "1 if the firewall matches the grant records.");
    let _ = writeln!(out, "portcullis_firewall_ok {}", u8::from(fw.problem().is_none()));
    crate::fleet::metrics::render(&mut out);
    out
}

/// Prometheus metrics.
#[utoipa::path(
    get, path = "/metrics", tag = "meta",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, description = "Missing or bad token", body = super::error::ErrorBody),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render(&state).await)
}
