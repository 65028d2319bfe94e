//! The layer order of `src/lib.rs` ([`h5pay_worker::LAYERS`]) holds: every
//! `crate::` path in a module's files names a module of a lower row, so the
//! top-level modules form no circle and nothing points back up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The crate modules a source text names through `crate::`, comments left
/// out (a doc link is not an import), `crate::{a, b}` groups included.
fn named_modules(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut names = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        // `h5pay_worker_crate::` or `$crate::` are not this crate's paths.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.push(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
            names.push(first_ident(&item));
        } else {
            names.push(first_ident(rest));
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

fn first_ident(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn every_module_imports_only_from_lower_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let row: BTreeMap<&str, usize> = h5pay_worker::LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, names)| names.iter().map(move |n| (*n, i)))
        .collect();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut wrong = Vec::new();
    let mut unplaced = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap_or(f);
        let first = rel
            .components()
            .next()
            .map(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_owned()
            })
            .unwrap_or_default();
        // The binaries and the crate root are not layers.
        if ["main", "lib", "bin"].contains(&first.as_str()) {
            continue;
        }
        let Some(&own) = row.get(first.as_str()) else {
            unplaced.push(first);
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for name in named_modules(&text) {
            if name == first || name == "self" || name == "super" {
                continue;
            }
            match row.get(name.as_str()) {
                Some(&r) if r < own => {}
                Some(_) => wrong.push(format!("{} → {name}", rel.display())),
                // Macros exported at the crate root (`crate::step_span!`).
                None if text.contains(&format!("crate::{name}!")) => {}
                None => unplaced.push(name),
            }
        }
    }
    unplaced.sort();
    unplaced.dedup();
    assert!(unplaced.is_empty(), "modules not in LAYERS: {unplaced:?}");
    assert!(
        wrong.is_empty(),
        "imports that do not point to a lower layer:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_scanner_sees_paths_and_groups_but_not_comments() {
    let text = "use crate::{admin, telemetry::metrics};\n// crate::pipeline\nlet x = crate::text::clip(a);\n";
    assert_eq!(named_modules(text), ["admin", "telemetry", "text"]);
}
