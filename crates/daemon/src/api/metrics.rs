//! `/metrics`: Prometheus text format (0.0.4), same bearer auth as the rest.
//!
//! Engine counters come from the capture thread, published about once a second, so they
//! may lag by up to a second. Grant records come from the store; when the store is not
//! answering they are left out (not reported as 0), and `portcullis_store_up` says why.
//! Counters (`_total`) only grow: created grants are counted in memory as they are made.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::{blocking, AppState};
use crate::grants::OriginKind;
use crate::spa::RejectClass;
use crate::stats::Stats;
use crate::store::GrantState;

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value, escaped as the text format wants (`\`, `"`, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Everything the exposition shows, gathered first so that formatting is pure.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Grant records by (origin kind, state, count); `None` when the store is down.
    pub records: Option<Vec<(String, String, u64)>>,
    /// Grants created since start: (origin kind, door, count).
    pub created: Vec<(&'static str, String, u64)>,
    /// The capture thread's counters.
    pub stats: Stats,
    /// Store queue drops and write errors, when there is a store.
    pub store_counters: Option<(u64, u64)>,
    /// Grants the daemon closed at expiry.
    pub daemon_expired: u64,
    /// Firewall watch: (rulesets restored, repair failures, firewall matches the records).
    pub firewall: (u64, u64, bool),
}

/// Render every metric.
pub async fn render(state: &AppState) -> String {
    let g = &state.granter;
    let records = match g.store() {
        Ok(store) => {
            let store = store.clone();
            blocking(move || store.counts()).await.ok().and_then(Result::ok)
        }
        Err(_) => None,
    };
    let store_counters = g.store().ok().map(|store| {
        let c = store.counters();
        (c.dropped.load(Ordering::Relaxed), c.errors.load(Ordering::Relaxed))
    });
    exposition(&Snapshot {
        records,
        created: g.counters().created.snapshot(),
        stats: g.stats(),
        store_counters,
        daemon_expired: g.counters().daemon_expired.load(Ordering::Relaxed),
        firewall: {
            let fw = g.firewall_state();
            (
                fw.restores.load(Ordering::Relaxed),
                fw.repair_failures.load(Ordering::Relaxed),
                fw.problem().is_none(),
            )
        },
    })
}

/// The text exposition of `snap`.
pub fn exposition(snap: &Snapshot) -> String {
    let mut out = String::new();
    head(&mut out, "portcullis_build_info", "gauge", "Always 1; the version is in the label.");
    let _ = writeln!(out, "portcullis_build_info{{version=\"{}\"}} 1", label(env!("CARGO_PKG_VERSION")));
    head(&mut out, "portcullis_store_up", "gauge", "1 if the grant store is open and answering.");
    let _ = writeln!(out, "portcullis_store_up {}", u8::from(snap.records.is_some()));
    if let Some(counts) = &snap.records {
        let sum = |kind: OriginKind, state: GrantState| -> u64 {
            counts
                .iter()
                .filter(|(k, s, _)| k == kind.as_str() && s == state.as_str())
                .map(|(_, _, n)| n)
                .sum()
        };
        head(&mut out, "portcullis_grants_active", "gauge", "Active grant records by origin.");
        for k in OriginKind::ALL {
            let _ = writeln!(
                out,
                "portcullis_grants_active{{origin=\"{}\"}} {}",
                k.as_str(),
                sum(k, GrantState::Active)
            );
        }
        head(
            &mut out,
            "portcullis_grant_records",
            "gauge",
            "Grant records in the store by origin and state (old records are pruned).",
        );
        for k in OriginKind::ALL {
            for st in GrantState::ALL {
                let _ = writeln!(
                    out,
                    "portcullis_grant_records{{origin=\"{}\",state=\"{}\"}} {}",
                    k.as_str(),
                    st.as_str(),
                    sum(k, st)
                );
            }
        }
    }
    head(
        &mut out,
        "portcullis_grants_created_total",
        "counter",
        "Grants opened since start, by origin and door (SPA: user or stanza).",
    );
    for (kind, door, n) in &snap.created {
        let _ = writeln!(
            out,
            "portcullis_grants_created_total{{origin=\"{kind}\",door=\"{}\"}} {n}",
            label(door)
        );
    }
    let s = &snap.stats;
    head(&mut out, "portcullis_packets_total", "counter", "Sniffed packets handed to the engine.");
    let _ = writeln!(out, "portcullis_packets_total {}", s.packets);
    head(
        &mut out,
        "portcullis_capture_drops_total",
        "counter",
        "Packets the kernel dropped before capture could read them (receive buffer full).",
    );
    let _ = writeln!(out, "portcullis_capture_drops_total {}", s.capture_drops);
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
    if let Some((dropped, errors)) = snap.store_counters {
        head(
            &mut out,
            "portcullis_store_dropped_total",
            "counter",
            "Grant records and closes dropped (store thread behind or stopped).",
        );
        let _ = writeln!(out, "portcullis_store_dropped_total {dropped}");
        head(&mut out, "portcullis_store_errors_total", "counter", "Store write failures (rolled back).");
        let _ = writeln!(out, "portcullis_store_errors_total {errors}");
    }
    head(&mut out, "portcullis_daemon_expired_total", "counter", "Grants closed by the daemon at expiry.");
    let _ = writeln!(out, "portcullis_daemon_expired_total {}", snap.daemon_expired);
    let (restores, repair_failures, ok) = snap.firewall;
    head(
        &mut out,
        "portcullis_firewall_restores_total",
        "counter",
        "Rulesets reinstalled after someone else removed or changed them.",
    );
    let _ = writeln!(out, "portcullis_firewall_restores_total {restores}");
    head(
        &mut out,
        "portcullis_firewall_repair_failures_total",
        "counter",
        "Repairs of the ruleset that failed.",
    );
    let _ = writeln!(out, "portcullis_firewall_repair_failures_total {repair_failures}");
    head(&mut out, "portcullis_firewall_ok", "gauge", "1 if the firewall matches the grant records.");
    let _ = writeln!(out, "portcullis_firewall_ok {}", u8::from(ok));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn store_down_means_no_record_series_not_zeros() {
        let text = exposition(&Snapshot::default());
        assert!(lines(&text).contains(&"portcullis_store_up 0"));
        assert!(!text.contains("portcullis_grant_records{"), "{text}");
        assert!(!text.contains("portcullis_grants_active{"), "{text}");
        assert!(!text.contains("portcullis_store_dropped_total"), "{text}");
        // The counters that do not need the store are still there.
        assert!(lines(&text).contains(&"portcullis_capture_drops_total 0"));
    }

    #[test]
    fn records_are_a_gauge_and_created_grants_a_counter_per_door() {
        let snap = Snapshot {
            records: Some(vec![("door".into(), "active".into(), 2), ("door".into(), "expired".into(), 5)]),
            created: vec![("door", "ssh".into(), 7), ("spa", "alice".into(), 1), ("api", String::new(), 3)],
            stats: Stats { capture_drops: 4, ..Stats::default() },
            store_counters: Some((0, 0)),
            daemon_expired: 0,
            firewall: (0, 0, true),
        };
        let text = exposition(&snap);
        let l = lines(&text);
        for want in [
            "# TYPE portcullis_grant_records gauge",
            "portcullis_grant_records{origin=\"door\",state=\"active\"} 2",
            "portcullis_grant_records{origin=\"door\",state=\"expired\"} 5",
            "portcullis_grants_active{origin=\"door\"} 2",
            "# TYPE portcullis_grants_created_total counter",
            "portcullis_grants_created_total{origin=\"door\",door=\"ssh\"} 7",
            "portcullis_grants_created_total{origin=\"spa\",door=\"alice\"} 1",
            "portcullis_grants_created_total{origin=\"api\",door=\"\"} 3",
            "portcullis_capture_drops_total 4",
            "portcullis_store_up 1",
        ] {
            assert!(l.contains(&want), "missing {want:?} in:\n{text}");
        }
        assert!(!text.contains("portcullis_grants_total"), "the old GROUP BY 'counter' is gone");
        let build = format!("portcullis_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
        assert!(l.contains(&build.as_str()), "{text}");
    }

    #[test]
    fn every_series_has_its_type_line_first() {
        let snap =
            Snapshot { records: Some(Vec::new()), store_counters: Some((0, 0)), ..Snapshot::default() };
        let text = exposition(&snap);
        let mut typed = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(typed.insert(name.to_string()), "{name} typed twice");
                assert_eq!(
                    kind == "counter",
                    name.ends_with("_total"),
                    "{l}: counters and only counters end in _total"
                );
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                assert!(typed.contains(name), "{name} has no TYPE line before it");
            }
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
