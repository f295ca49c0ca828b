//! JSON-lines scanner behind `custodian guardrails scan`: lets any labelled
//! corpus be scored from outside the engine.

use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::guardrails::evaluate::{evaluate, Context, Finding};
use crate::guardrails::pii::{KnownEntities, KnownEntitiesSpec};
use crate::guardrails::policy::Policy;
use crate::guardrails::rules::{Action, Stage};

/// One input line. Fields other than these are ignored, so a labelled corpus
/// can be piped in as it is.
#[derive(Deserialize)]
struct Input {
    text: String,
    #[serde(default)]
    context: Option<KnownEntitiesSpec>,
    #[serde(default)]
    stage: Option<Stage>,
    #[serde(default)]
    id: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct Output<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a serde_json::Value>,
    action: Action,
    masked_text: &'a str,
    findings: &'a [Finding],
}

#[derive(Serialize)]
struct ErrorLine {
    line: u64,
    error: String,
}

/// Counts of what [`scan_jsonl`] read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    pub lines: u64,
    pub errors: u64,
}

/// Reads JSON lines `{"text": "…", "context": {"names": [...], …}, "stage":
/// "inbound", "id": …}` (only `text` required) and writes one JSON line per
/// input: `{"id", "action", "masked_text", "findings": [{"rule_id", "type",
/// "start", "end", "score", "action"}]}` with byte offsets into `text`.
///
/// Every line gets a fresh vault. A line that is not valid UTF-8 or JSON
/// yields `{"line": n, "error": "…"}` and scanning goes on; blank lines are
/// skipped. Only I/O errors stop the scan.
pub fn scan_jsonl(
    mut input: impl BufRead,
    mut output: impl Write,
    policy: &Policy,
) -> io::Result<ScanStats> {
    let mut stats = ScanStats::default();
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line_no += 1;
        let line = match std::str::from_utf8(&buf) {
            Ok(l) => l.trim_end_matches(['\n', '\r']),
            Err(e) => {
                stats.lines += 1;
                stats.errors += 1;
                write_error(&mut output, line_no, format!("line is not UTF-8: {e}"))?;
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        stats.lines += 1;
        let parsed: Input = match serde_json::from_str(line) {
            Ok(i) => i,
            Err(e) => {
                stats.errors += 1;
                write_error(&mut output, line_no, e.to_string())?;
                continue;
            }
        };
        let mut ctx = Context::new(
            Default::default(),
            parsed.context.map(KnownEntities::from).unwrap_or_default(),
        );
        let verdict = evaluate(
            parsed.stage.unwrap_or(Stage::Inbound),
            &parsed.text,
            &mut ctx,
            policy,
        );
        let out = Output {
            id: parsed.id.as_ref(),
            action: verdict.action,
            masked_text: &verdict.masked_text,
            findings: &verdict.findings,
        };
        serde_json::to_writer(&mut output, &out)?;
        output.write_all(b"\n")?;
    }
    output.flush()?;
    Ok(stats)
}

fn write_error(output: &mut impl Write, line: u64, error: String) -> io::Result<()> {
    serde_json::to_writer(&mut *output, &ErrorLine { line, error })?;
    output.write_all(b"\n")
}
