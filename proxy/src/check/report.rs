//! What `check` found, printed as ✓/✗ lines or as JSON: the outcome an operator (or a script,
//! `--output json`) reads, with a hint and a runbook link for every failure.

use serde::Serialize;

/// How one check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As it should be.
    Ok,
    /// Works, but not as intended (does not fail the command).
    Warn,
    /// Broken: the command exits non-zero.
    Fail,
    /// Not applicable here (e.g. no prometheus-operator).
    Skip,
}

/// One check's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// Short id (`secret`, `agents-ready`, ...): also the runbook anchor `check-<id>`.
    pub check: &'static str,
    /// Its outcome.
    pub status: Status,
    /// What was seen.
    pub detail: String,
    /// What to do, for a warning or failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Where the steps are, for a warning or failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub doc: Option<String>,
}

/// Every finding, in order.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The install's namespace.
    pub namespace: String,
    /// No check failed.
    pub ok: bool,
    /// The findings.
    pub checks: Vec<Finding>,
}

impl Report {
    pub(crate) fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            ok: true,
            checks: Vec::new(),
        }
    }

    fn push(&mut self, check: &'static str, status: Status, detail: String, hint: Option<String>) {
        let doc = matches!(status, Status::Warn | Status::Fail)
            .then(|| format!("docs/runbooks.md#check-{check}"));
        self.ok &= status != Status::Fail;
        self.checks.push(Finding {
            check,
            status,
            detail,
            hint,
            doc,
        });
    }

    pub(crate) fn ok(&mut self, check: &'static str, detail: impl Into<String>) {
        self.push(check, Status::Ok, detail.into(), None);
    }

    pub(crate) fn skip(&mut self, check: &'static str, detail: impl Into<String>) {
        self.push(check, Status::Skip, detail.into(), None);
    }

    pub(crate) fn warn(
        &mut self,
        check: &'static str,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.push(check, Status::Warn, detail.into(), Some(hint.into()));
    }

    pub(crate) fn fail(
        &mut self,
        check: &'static str,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.push(check, Status::Fail, detail.into(), Some(hint.into()));
    }

    /// The finding of `check`, if it ran.
    pub fn get(&self, check: &str) -> Option<&Finding> {
        self.checks.iter().find(|f| f.check == check)
    }

    /// The ✓/✗ lines, a hint and a link under each warning and failure, and a summary.
    pub fn text(&self) -> String {
        let mut out = format!("sigsci-proxy check, namespace {}\n", self.namespace);
        for f in &self.checks {
            let mark = match f.status {
                Status::Ok => "✓",
                Status::Warn => "!",
                Status::Fail => "✗",
                Status::Skip => "-",
            };
            out.push_str(&format!("{mark} {}: {}\n", f.check, f.detail));
            if let Some(hint) = &f.hint {
                out.push_str(&format!("    hint: {hint}\n"));
            }
            if let Some(doc) = &f.doc {
                out.push_str(&format!("    see:  {doc}\n"));
            }
        }
        let failed = self
            .checks
            .iter()
            .filter(|f| f.status == Status::Fail)
            .count();
        let warned = self
            .checks
            .iter()
            .filter(|f| f.status == Status::Warn)
            .count();
        out.push_str(&match failed {
            0 => format!("all checks passed ({warned} warning(s))\n"),
            n => format!("{n} check(s) failed, {warned} warning(s)\n"),
        });
        out
    }

    /// The report as pretty JSON.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serializes")
    }
}
