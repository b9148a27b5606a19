//! The shape of `src/`: no import cycle between modules, at file level or between top-level
//! modules (folders), and no function over 120 lines outside tests. Prints the figures it checks,
//! so `cargo test --test layout -- --nocapture` reproduces them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use petgraph::algo::tarjan_scc;
use petgraph::graphmap::DiGraphMap;

/// The longest a function outside tests may be, in lines from its signature to its closing brace.
const MAX_FUNCTION_LINES: usize = 120;

/// The tree checked: this crate's `src/`, or `RETENTION_LAYOUT_SRC` to measure another checkout.
fn src() -> PathBuf {
    std::env::var_os("RETENTION_LAYOUT_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

/// Every `.rs` file under `src/` with its module path (`plan::graph`, `cli` for `cli/mod.rs`).
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&src(), &mut files);
    files
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(src()).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|l| l == "mod") {
                parts.pop();
            }
            if parts == ["main"] || parts == ["lib"] {
                return None;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            Some((parts.join("::"), text))
        })
        .collect()
}

/// The text outside `#[cfg(test)]` items (tests may reach anywhere).
fn production(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
}

/// The modules a file names through `crate::` and `super::` paths (the longest path that is a
/// module; `super::` is resolved against the file's own module path).
fn dependencies(module: &str, text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let text = production(text);
    let parent: Vec<&str> = {
        let mut p: Vec<&str> = module.split("::").collect();
        p.pop();
        p
    };
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent)] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            rest = &rest[i + prefix.len()..];
            let path: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut parts: Vec<&str> = base.clone();
            parts.extend(path.split("::").filter(|p| !p.is_empty()));
            for n in (1..=parts.len()).rev() {
                let m = parts[..n].join("::");
                if known.contains(&m) {
                    out.insert(m);
                    break;
                }
            }
        }
    }
    out
}

fn cycles(edges: &BTreeSet<(String, String)>) -> Vec<Vec<String>> {
    let mut g: DiGraphMap<&str, ()> = DiGraphMap::new();
    for (a, b) in edges {
        g.add_edge(a.as_str(), b.as_str(), ());
    }
    tarjan_scc(&g)
        .into_iter()
        .filter(|scc| scc.len() > 1)
        .map(|scc| scc.into_iter().map(String::from).collect())
        .collect()
}

fn top(module: &str) -> String {
    module.split("::").next().unwrap().to_string()
}

#[test]
fn no_import_cycles_between_files_or_folders() {
    let modules = modules();
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    let mut file_edges = BTreeSet::new();
    let mut folder_edges = BTreeSet::new();
    for (m, text) in &modules {
        for d in dependencies(m, text, &known) {
            // A module's own children and its parent's `mod.rs` are one unit with it.
            if d == *m || d.starts_with(&format!("{m}::")) || m.starts_with(&format!("{d}::")) {
                continue;
            }
            file_edges.insert((m.clone(), d.clone()));
            if top(m) != top(&d) {
                folder_edges.insert((top(m), top(&d)));
            }
        }
    }
    let file_cycles = cycles(&file_edges);
    let folder_cycles = cycles(&folder_edges);
    println!(
        "{} modules, {} file-level imports, {} folder-level imports; cycles: {} between files, {} between folders",
        modules.len(),
        file_edges.len(),
        folder_edges.len(),
        file_cycles.len(),
        folder_cycles.len()
    );
    assert!(
        file_cycles.is_empty(),
        "import cycles between files: {file_cycles:?}"
    );
    assert!(
        folder_cycles.is_empty(),
        "import cycles between folders: {folder_cycles:?}"
    );
}

/// Functions in `text` outside tests, with their length in lines.
fn function_lengths(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = production(text).lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let is_fn = [
            "fn ",
            "pub fn ",
            "async fn ",
            "pub async fn ",
            "pub(crate) fn ",
            "pub(crate) async fn ",
        ]
        .iter()
        .any(|p| t.starts_with(p));
        if !is_fn {
            continue;
        }
        let indent = line.len() - t.len();
        let name: String = t
            .split("fn ")
            .nth(1)
            .unwrap_or("")
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // The end: the first line after the signature that closes at the same indent.
        let end = lines[i..].iter().position(|l| {
            let lt = l.trim_start();
            (l.len() - lt.len() == indent && lt.starts_with('}'))
                || l.trim_end().ends_with(';') && l.len() - lt.len() == indent && !l.contains('{')
        });
        if let Some(n) = end {
            out.push((name, n + 1));
        }
    }
    out
}

#[test]
fn no_function_over_the_limit_outside_tests() {
    let mut all: Vec<(usize, String)> = Vec::new();
    for (m, text) in modules() {
        for (name, n) in function_lengths(&text) {
            all.push((n, format!("{m}::{name}")));
        }
    }
    all.sort_by(|a, b| b.cmp(a));
    println!("longest functions outside tests:");
    for (n, f) in all.iter().take(5) {
        println!("  {n:>4}  {f}");
    }
    let over: Vec<&(usize, String)> = all
        .iter()
        .filter(|(n, _)| *n > MAX_FUNCTION_LINES)
        .collect();
    assert!(
        over.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines: {over:?}"
    );
}

#[test]
fn super_paths_count_as_imports() {
    let known: BTreeSet<String> = ["gen", "gen::model", "gen::raw", "store"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let text =
        "use super::model::Truth;\nuse crate::store::Stores;\nfn f() { super::raw::put() }\n";
    let deps: Vec<String> = dependencies("gen::finance", text, &known)
        .into_iter()
        .collect();
    assert_eq!(deps, ["gen::model", "gen::raw", "store"]);
}

#[test]
fn function_lengths_are_counted_to_the_closing_brace() {
    let text = "fn a() {\n    let x = 1;\n}\n\npub async fn b(\n    y: u8,\n) -> u8 {\n    y\n}\n#[cfg(test)]\nfn c() {\n}\n";
    assert_eq!(
        function_lengths(text),
        vec![("a".to_string(), 3), ("b".to_string(), 5)]
    );
}
