//! The layers point down only (README, "Architecture"). This test reads every file under `src/`,
//! collects the top-level modules each one names (`use crate::…` statements, grouped uses and
//! inline `crate::…` / `super::…` paths alike, comments and string literals left out), and fails
//! when a path points up the layer table or closes a cycle between top-level modules, naming the
//! file and the import.
//! There is no list of tolerated exceptions: the last upward import went with the architecture
//! issue (#12), and a new one fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lower first. A module may name modules of a lower rank; the foundation's modules may also
/// name each other (without a cycle), and so may the composition's. An engine imports only the foundation, and each domain has
/// a rank of its own, so domains call only the domains before them (`auth`, which builds a
/// member's credentials, before `tenants`, which manages the members).
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundation",
        &["error", "config", "crypto", "db", "rbac", "http", "events"],
    ),
    ("engines", &["guardrails", "audit", "queue"]),
    ("auth", &["auth"]),
    ("tenants", &["tenants"]),
    ("crm", &["crm"]),
    ("knowledge", &["knowledge"]),
    ("conversations", &["conversations"]),
    ("channels", &["channels"]),
    // Tickets and tasks: a public comment is sent by conversations, the agent opens tickets.
    ("cs", &["cs"]),
    ("reviews", &["reviews"]),
    ("agent", &["agent"]),
    ("retention", &["retention"]),
    ("privacy", &["privacy"]),
    ("composition", &["app", "server", "lib", "main"]),
    ("web", &["web"]),
];

fn rank(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

fn layer_name(module: &str) -> &'static str {
    rank(module).map(|r| LAYERS[r].0).unwrap_or("unknown")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/agent/tools.rs` → `[agent, tools]`, `src/agent/mod.rs` →
/// `[agent]`, `src/lib.rs` → `[]` (the crate root), `src/app.rs` → `[app]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().expect("a file name");
    let stem = file.trim_end_matches(".rs");
    if !(stem == "mod" || (parts.is_empty() && (stem == "lib" || stem == "main"))) {
        parts.push(stem.to_string());
    }
    parts
}

/// The text with comments removed and string and character literals emptied, so a path that
/// only appears in a doc comment or a message is not taken for an import.
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && matches!(next, Some('"') | Some('#')) && !ident_before(&chars, i) {
            // A raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}'), or a lifetime ('a), which stays.
            let close = match (next, chars.get(i + 2)) {
                (Some('\\'), _) => chars[i + 2..]
                    .iter()
                    .position(|x| *x == '\'')
                    .map(|p| i + 2 + p),
                (Some(_), Some('\'')) => Some(i + 2),
                _ => None,
            };
            match close {
                Some(end) => {
                    out.push_str("' '");
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The top-level modules a file names through `crate::`, `super::` and `self::` paths,
/// including the members of grouped uses (`use crate::{a, b::c}`).
fn named_modules(code: &str, module: &[String]) -> BTreeSet<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut found = BTreeSet::new();
    // Inline modules (`mod tests { … }`) nest the path that `super` climbs from: each is kept
    // with the brace depth its body opened at.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d > depth) {
                    inline.pop();
                }
            }
            _ => {}
        }
        if !chars[i].is_alphabetic() || ident_before(&chars, i) {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        if word == "mod" {
            let mut k = i;
            while chars.get(k).is_some_and(|c| c.is_whitespace()) {
                k += 1;
            }
            let name_start = k;
            while chars.get(k).is_some_and(|c| is_ident(*c)) {
                k += 1;
            }
            let name: String = chars[name_start..k].iter().collect();
            while chars.get(k).is_some_and(|c| c.is_whitespace()) {
                k += 1;
            }
            if !name.is_empty() && chars.get(k) == Some(&'{') {
                depth += 1;
                inline.push((name, depth));
                i = k + 1;
            }
            continue;
        }
        if !matches!(word.as_str(), "crate" | "super" | "self") || !at_path_sep(&chars, i) {
            continue;
        }
        let module: Vec<String> = module
            .iter()
            .cloned()
            .chain(inline.iter().map(|(name, _)| name.clone()))
            .collect();
        // Resolve the leading `crate`, `self` and `super` segments against the file's module.
        let mut base: Vec<String> = match word.as_str() {
            "crate" => vec![],
            "self" => module.to_vec(),
            _ => module[..module.len().saturating_sub(1)].to_vec(),
        };
        let mut j = i + 2;
        loop {
            let seg_start = j;
            while j < chars.len() && is_ident(chars[j]) {
                j += 1;
            }
            let seg: String = chars[seg_start..j].iter().collect();
            if seg == "super" && at_path_sep(&chars, j) {
                base.pop();
                j += 2;
                continue;
            }
            if !base.is_empty() {
                found.insert(base[0].clone());
            } else if !seg.is_empty() {
                found.insert(seg);
            } else if chars.get(seg_start) == Some(&'{') {
                // `crate::{…}` (or `super::{…}` at the root): each top-level item of the group.
                let mut depth = 0;
                let mut k = seg_start;
                let mut item_start = true;
                while k < chars.len() {
                    match chars[k] {
                        '{' => {
                            depth += 1;
                            item_start = depth == 1;
                        }
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        ',' if depth == 1 => item_start = true,
                        c if depth == 1 && item_start && is_ident(c) => {
                            let s = k;
                            while k < chars.len() && is_ident(chars[k]) {
                                k += 1;
                            }
                            found.insert(chars[s..k].iter().collect());
                            item_start = false;
                            continue;
                        }
                        _ => {}
                    }
                    k += 1;
                }
            }
            break;
        }
        i = j;
    }
    found
}

fn at_path_sep(chars: &[char], i: usize) -> bool {
    chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':')
}

/// Every file's top-level module and the other top-level modules it names.
fn imports() -> Vec<(String, String, BTreeSet<String>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut out = Vec::new();
    for path in files {
        let relative = path.strip_prefix(&src).expect("under src");
        let module = module_path(relative);
        let own = module.first().cloned().unwrap_or_else(|| {
            relative
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        });
        let source = std::fs::read_to_string(&path).expect("a readable source file");
        let mut named = named_modules(&code_only(&source), &module);
        named.remove(&own);
        let shown = path
            .strip_prefix(root)
            .expect("under the manifest directory")
            .to_string_lossy()
            .into_owned();
        out.push((shown, own, named));
    }
    out
}

#[test]
fn every_top_level_module_has_a_place_in_the_layer_table() {
    for (file, own, named) in imports() {
        assert!(
            rank(&own).is_some(),
            "{file}: module `{own}` is in no layer"
        );
        for module in named {
            // Names the file takes from outside the crate's own modules (a macro's `crate::`
            // of another crate never reaches here; a typo would not compile).
            assert!(
                rank(&module).is_some(),
                "{file}: names `crate::{module}`, which is in no layer of the table"
            );
        }
    }
}

#[test]
fn imports_point_down_the_layers_only() {
    let mut upward = BTreeSet::new();
    for (file, own, named) in imports() {
        let own_rank = rank(&own).expect("placed");
        for module in named {
            let Some(their_rank) = rank(&module) else {
                continue;
            };
            let peers = their_rank == own_rank && (own_rank == 0 || Some(own_rank) == rank("app"));
            if their_rank > own_rank || (their_rank == own_rank && !peers) {
                upward.insert((file.clone(), module.clone(), own.clone()));
            }
        }
    }
    let upward: Vec<String> = upward
        .iter()
        .map(|(file, module, own)| {
            format!(
                "{file} ({}) imports crate::{module} ({}), which is above it",
                layer_name(own),
                layer_name(module)
            )
        })
        .collect();
    assert!(
        upward.is_empty(),
        "imports that point up the layers:\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_cycle_joins_top_level_modules() {
    // Every import must leave the modules in an order (peers of a layer included).
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (file, own, named) in imports() {
        for module in named {
            edges
                .entry(own.clone())
                .or_default()
                .entry(module)
                .or_insert_with(|| file.clone());
        }
    }
    let reaches = |from: &str, to: &str| -> bool {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(m) = stack.pop() {
            if m == to {
                return true;
            }
            if seen.insert(m.clone()) {
                stack.extend(edges.get(&m).into_iter().flat_map(|e| e.keys().cloned()));
            }
        }
        false
    };
    let mut cycles = Vec::new();
    for (from, named) in &edges {
        for (to, file) in named {
            if reaches(to, from) {
                cycles.push(format!(
                    "{file}: {from} → {to}, and {to} leads back to {from}"
                ));
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "imports that close a cycle between top-level modules:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_reader_finds_imports_in_every_form_and_ignores_comments_and_strings() {
    let source = r##"
        use crate::error::Error;
        use crate::{config::Config, db};
        // use crate::agent::Nothing;
        /// See [`crate::reviews`].
        fn f() { let s = "crate::retention::x"; let r = r#"crate::privacy"#; crate::audit::record(); }
        use super::super::knowledge::Query;
        mod tests { use super::super::whatsapp::Thing; fn g() { if x { y } } }
        use super::retention_is_not_named_here;
        let c = 'x'; let l: &'static str = "";
    "##;
    let named = named_modules(&code_only(source), &["channels".into(), "whatsapp".into()]);
    let named: Vec<&str> = named.iter().map(String::as_str).collect();
    assert_eq!(
        named,
        ["audit", "channels", "config", "db", "error", "knowledge"]
    );
    assert_eq!(module_path(Path::new("agent/mod.rs")), ["agent"]);
    assert_eq!(module_path(Path::new("lib.rs")), Vec::<String>::new());
    assert_eq!(module_path(Path::new("agent/tools.rs")), ["agent", "tools"]);
}
