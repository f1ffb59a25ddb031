//! One scenario's result as a machine-readable JSON line and a markdown
//! row, with the bounds checked: nexus RSS < 256 MiB, bystander
//! p99 ≤ 10 ms on the abuser's shard and ≤ 5 ms on the other, `/healthz`
//! 200 throughout, nothing lost, the abuser paused or closed with a code.

use serde_json::json;

use crate::probe::ProbeResult;
use crate::scenarios::{Measures, Outcome};

/// RSS bound, MiB.
pub const RSS_MIB: f64 = 256.0;
/// Bystander p99 bound on the abuser's shard, ms.
pub const SAME_P99_MS: f64 = 10.0;
/// Bystander p99 bound on the other shard, ms.
pub const OTHER_P99_MS: f64 = 5.0;

/// Everything one run produced.
pub struct Line<'a> {
    /// Scenario name.
    pub scenario: &'a str,
    /// Row of issue 10's table (or issue 20's; 0: the wss rows, shown as
    /// `wss`).
    pub row: u32,
    /// before / after.
    pub label: &'a str,
    /// Connections, duration, limits, extra flags.
    pub settings: String,
    /// Samplers and bystanders.
    pub measures: &'a Measures,
    /// The scenario's own findings.
    pub outcome: &'a Outcome,
    /// `accept failed` log lines.
    pub accept_failed: u64,
    /// The nexus stopped on SIGTERM within 10 s.
    pub stopped: bool,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn probe_json(p: &ProbeResult) -> serde_json::Value {
    json!({
        "shard": p.shard, "sent": p.sent, "received": p.received, "lost": p.lost(),
        "p50_ms": p.p50_ms, "p99_ms": p.p99_ms, "max_ms": p.max_ms, "trouble": p.trouble,
    })
}

fn probe_cell(p: &ProbeResult) -> String {
    let mut s = format!("{:.2} / {:.2} / {:.1}", p.p50_ms, p.p99_ms, p.max_ms);
    if let Some(t) = &p.trouble {
        s += &format!(" ({t})");
    }
    s
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

impl Line<'_> {
    /// The row as shown: its number, or `wss` for the wss rows.
    fn row_label(&self) -> serde_json::Value {
        if self.row == 0 {
            json!("wss")
        } else {
            json!(self.row)
        }
    }

    /// (target, held) for each bound.
    pub fn verdicts(&self) -> Vec<(&'static str, bool)> {
        let m = self.measures;
        let probes_ok = |p: &ProbeResult| p.trouble.is_none() && p.sent > 0;
        vec![
            ("rss", mib(m.rss_peak_kib) < RSS_MIB),
            (
                "same_p99",
                probes_ok(&m.same) && m.same.p99_ms <= SAME_P99_MS,
            ),
            (
                "other_p99",
                probes_ok(&m.other) && m.other.p99_ms <= OTHER_P99_MS,
            ),
            (
                // The flood rows: the abuser's shard never waits 10 ms.
                "same_max",
                !crate::floods::is_flood(self.scenario) || m.same.max_ms <= SAME_P99_MS,
            ),
            ("healthz", m.health.all_ok()),
            ("no_loss", m.same.lost() == 0 && m.other.lost() == 0),
            // A flood of valid commands is served, fairly: the bystanders'
            // bounds judge it, not whether the flooder was paused or closed.
            (
                "abuser",
                self.outcome.abuser.handled || crate::floods::is_flood(self.scenario),
            ),
        ]
    }

    /// True when every bound held.
    pub fn passed(&self) -> bool {
        self.verdicts().iter().all(|(_, ok)| *ok)
    }

    /// The JSON summary.
    pub fn json(&self) -> String {
        let m = self.measures;
        let verdicts: serde_json::Map<String, serde_json::Value> = self
            .verdicts()
            .into_iter()
            .map(|(k, ok)| (k.to_string(), json!(ok)))
            .collect();
        json!({
            "scenario": self.scenario, "row": self.row_label(), "label": self.label,
            "settings": self.settings,
            "rss_base_mib": mib(m.rss_base_kib), "rss_peak_mib": mib(m.rss_peak_kib),
            "fds_peak": m.fds_peak,
            "same": probe_json(&m.same), "other": probe_json(&m.other),
            "healthz": m.health.describe(), "healthz_ok": m.health.all_ok(),
            "abuser": self.outcome.abuser.text, "abuser_handled": self.outcome.abuser.handled,
            "notes": self.outcome.notes, "accept_failed": self.accept_failed,
            "nexus_stopped_on_sigterm": self.stopped,
            "verdicts": verdicts, "passed": self.passed(),
        })
        .to_string()
    }

    /// One markdown row: | row | scenario | RSS | same | other | healthz |
    /// lost | abuser | notes | result |.
    pub fn markdown(&self) -> String {
        let m = self.measures;
        let failed: Vec<&str> = self
            .verdicts()
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(k, _)| k)
            .collect();
        let result = if failed.is_empty() {
            mark(true).to_string()
        } else {
            format!("{} ({})", mark(false), failed.join(", "))
        };
        format!(
            "| {} | {} ({}) | {:.0} → {:.0} MiB | s{}: {} | s{}: {} | {} | {} | {} | {}; fds peak {} | {} |",
            self.row_label().to_string().trim_matches('"'),
            self.scenario,
            self.settings,
            mib(m.rss_base_kib),
            mib(m.rss_peak_kib),
            m.same.shard,
            probe_cell(&m.same),
            m.other.shard,
            probe_cell(&m.other),
            m.health.describe(),
            m.same.lost() + m.other.lost(),
            self.outcome.abuser.text.replace('|', "/"),
            self.outcome.notes.replace('|', "/"),
            m.fds_peak,
            result
        )
    }
}
