//! The result of a run: one row per check, as text, JSON or JUnit XML.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

/// What became of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    /// The server did what the protocol asks.
    #[serde(rename = "pass")]
    Pass,
    /// It did not; the evidence says what it did instead.
    #[serde(rename = "fail")]
    Fail,
    /// The check could not be run against this server (v2 only, no producer of events, no
    /// second credential, a timer longer than allowed); the detail says why.
    #[serde(rename = "n/a")]
    NotApplicable,
}

impl Status {
    /// `PASS`, `FAIL` or `N/A`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::NotApplicable => "N/A",
        }
    }
}

/// One check's row.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// Stable id, `group.name` (e.g. `resume.since-zero`).
    pub id: &'static str,
    /// Where the protocol says so: `PROTOCOL.md §n` (v1) and/or a `PROTOCOL-v2.md` section.
    pub section: &'static str,
    /// What it checks.
    pub title: &'static str,
    /// Pass, fail or not applicable.
    pub status: Status,
    /// For a pass, what was seen; for a failure, what went wrong; for n/a, why.
    pub detail: String,
    /// For a failure: the frames sent and received (trimmed), in order.
    pub evidence: Vec<String>,
    /// How long it took.
    #[serde(serialize_with = "millis")]
    pub elapsed: Duration,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The server's URL (without the token).
    pub url: String,
    /// The protocol version the suite spoke (negotiated, or forced with `Options::protocol`).
    pub protocol: u32,
    /// Where events came from, if anywhere.
    pub producer: Option<String>,
    /// One row per check, in order.
    pub results: Vec<CheckResult>,
    /// How long the run took.
    #[serde(serialize_with = "millis")]
    pub elapsed: Duration,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// Evidence lines shown per failure: the first and last of the transcript.
const EVIDENCE_HEAD: usize = 12;
const EVIDENCE_TAIL: usize = 28;

impl Report {
    /// True iff every applicable check passed (the exit status of `tether check`).
    pub fn passed(&self) -> bool {
        self.results.iter().all(|r| r.status != Status::Fail)
    }

    /// How many checks ended with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.results.iter().filter(|r| r.status == status).count()
    }

    /// The ids of the checks that ended with `status`, in order.
    pub fn ids(&self, status: Status) -> Vec<&'static str> {
        self.results
            .iter()
            .filter(|r| r.status == status)
            .map(|r| r.id)
            .collect()
    }

    /// The row of check `id`.
    pub fn result(&self, id: &str) -> Option<&CheckResult> {
        self.results.iter().find(|r| r.id == id)
    }

    /// The report as one JSON object (`tether check --json`).
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        v["passed"] = json!(self.passed());
        v["counts"] = json!({
            "pass": self.count(Status::Pass),
            "fail": self.count(Status::Fail),
            "n/a": self.count(Status::NotApplicable),
        });
        v
    }

    /// The report as JUnit XML (`tether check --junit FILE`): one test case per check, a
    /// failure with its evidence, n/a as skipped.
    pub fn to_junit(&self) -> String {
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let (tests, failures, skipped) = (
            self.results.len(),
            self.count(Status::Fail),
            self.count(Status::NotApplicable),
        );
        let time = self.elapsed.as_secs_f64();
        x.push_str(&format!(
            "<testsuites name=\"tether check\" tests=\"{tests}\" failures=\"{failures}\" \
             skipped=\"{skipped}\" time=\"{time:.3}\">\n"
        ));
        x.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" \
             skipped=\"{skipped}\" time=\"{time:.3}\">\n",
            xml(&format!("tether check {} (v{})", self.url, self.protocol))
        ));
        for r in &self.results {
            let group = r.id.split('.').next().unwrap_or(r.id);
            x.push_str(&format!(
                "    <testcase classname=\"tether.check.{}\" name=\"{}\" time=\"{:.3}\">",
                xml(group),
                xml(r.id),
                r.elapsed.as_secs_f64()
            ));
            match r.status {
                Status::Pass => {}
                Status::Fail => x.push_str(&format!(
                    "\n      <failure message=\"{}\">{}\n{}</failure>\n    ",
                    xml(&r.detail),
                    xml(&format!("{} ({})", r.title, r.section)),
                    xml(&evidence(&r.evidence).join("\n"))
                )),
                Status::NotApplicable => x.push_str(&format!(
                    "\n      <skipped message=\"{}\"/>\n    ",
                    xml(&r.detail)
                )),
            }
            x.push_str("</testcase>\n");
        }
        x.push_str("  </testsuite>\n</testsuites>\n");
        x
    }
}

/// The evidence shown for a failure: the head and tail of the transcript.
fn evidence(lines: &[String]) -> Vec<String> {
    if lines.len() <= EVIDENCE_HEAD + EVIDENCE_TAIL {
        return lines.to_vec();
    }
    let mut out = lines[..EVIDENCE_HEAD].to_vec();
    out.push(format!(
        "… {} lines …",
        lines.len() - EVIDENCE_HEAD - EVIDENCE_TAIL
    ));
    out.extend_from_slice(&lines[lines.len() - EVIDENCE_TAIL..]);
    out
}

/// XML text and attribute escaping; control characters XML cannot carry become U+FFFD.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' => out.push(c),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

impl fmt::Display for Report {
    /// The table `tether check` prints: one row per check; under a failure its detail and
    /// evidence, under an n/a its reason.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let producer = self
            .producer
            .as_deref()
            .map_or("no producer of events".into(), |p| {
                format!("events from {p}")
            });
        writeln!(
            f,
            "tether check {}: protocol v{}, {producer}\n(§n: PROTOCOL.md; v2: docs/PROTOCOL-v2.md)\n",
            self.url, self.protocol
        )?;
        let width = self.results.iter().map(|r| r.id.len()).max().unwrap_or(0);
        for r in &self.results {
            writeln!(
                f,
                "{:<4}  {:<width$}  {} ({})",
                r.status.label(),
                r.id,
                r.title,
                r.section
            )?;
            match r.status {
                Status::Pass => {}
                Status::NotApplicable => writeln!(f, "      {}", r.detail)?,
                Status::Fail => {
                    writeln!(f, "      {}", r.detail)?;
                    for line in evidence(&r.evidence) {
                        writeln!(f, "        {line}")?;
                    }
                }
            }
        }
        write!(
            f,
            "\n{} checks: {} passed, {} failed, {} not applicable ({:.1} s)",
            self.results.len(),
            self.count(Status::Pass),
            self.count(Status::Fail),
            self.count(Status::NotApplicable),
            self.elapsed.as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let row = |id, status, detail: &str| CheckResult {
            id,
            section: "PROTOCOL.md §3.1",
            title: "a title",
            status,
            detail: detail.into(),
            evidence: vec![
                "A → {\"type\":\"hello\"}".into(),
                "A ← <odd> & \u{1}".into(),
            ],
            elapsed: Duration::from_millis(12),
        };
        Report {
            url: "ws://127.0.0.1:1/ws".into(),
            protocol: 2,
            producer: None,
            results: vec![
                row("negotiate.a", Status::Pass, "ok"),
                row("negotiate.b", Status::Fail, "hello_ok \"protocol\":true"),
                row("resume.c", Status::NotApplicable, "v2 only"),
            ],
            elapsed: Duration::from_millis(40),
        }
    }

    #[test]
    fn a_failure_fails_the_report_and_n_a_does_not() {
        let mut r = report();
        assert!(!r.passed());
        r.results[1].status = Status::NotApplicable;
        assert!(r.passed());
    }

    #[test]
    fn junit_has_one_case_per_check_and_escapes_what_servers_send() {
        let x = report().to_junit();
        assert_eq!(x.matches("<testcase ").count(), 3);
        assert!(x.contains("tests=\"3\" failures=\"1\" skipped=\"1\""));
        assert!(x.contains("<failure message=\"hello_ok &quot;protocol&quot;:true\">"));
        assert!(x.contains("A ← &lt;odd&gt; &amp; \u{fffd}"));
        assert!(x.contains("<skipped message=\"v2 only\"/>"));
    }

    #[test]
    fn json_and_text_name_every_check() {
        let r = report();
        let v = r.to_json();
        assert_eq!(v["passed"], false);
        assert_eq!(v["counts"]["n/a"], 1);
        assert_eq!(v["results"][1]["status"], "fail");
        assert_eq!(
            r.result("resume.c").map(|c| c.status),
            Some(Status::NotApplicable)
        );
        let text = r.to_string();
        for id in ["negotiate.a", "negotiate.b", "resume.c"] {
            assert!(text.contains(id));
        }
        assert!(text.ends_with("3 checks: 1 passed, 1 failed, 1 not applicable (0.0 s)"));
    }
}
