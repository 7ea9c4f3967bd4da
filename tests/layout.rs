//! The product does not use the development tools, and the maps of the
//! tree (README.md "Where things live", ARCHITECTURE.md "Modules: what
//! each may and may not know") agree with it.
//!
//! Everything that exists to rehearse, demonstrate, measure or test the
//! relay (fakedog, the run-time CA, the sandbox, the demo, the benchmark,
//! the fuzz properties) lives under `src/dev/`, and the product's own files
//! under `src/` never name it. Only the binary's front, `src/cli.rs`
//! (`ddrelay fakedog`, `demo`, `bench`), may; `src/lib.rs` may only declare
//! the module, hidden from the docs. A pure scan of the sources, so it runs
//! in milliseconds.
//!
//! Each violation is printed as `file:line: text`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

/// Product files that may name `dev`, relative to `src/`.
const FRONT: [&str; 2] = ["cli.rs", "main.rs"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The `.rs` files under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The byte offsets where `text` has the word `dev`.
fn dev_words(text: &str) -> Vec<usize> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices("dev")
        .map(|(i, _)| i)
        .filter(|&i| {
            !text[..i].chars().next_back().is_some_and(ident)
                && !text[i + 3..].chars().next().is_some_and(ident)
        })
        .collect()
}

/// Whether `line` has a path through the `dev` module: `crate::dev`,
/// `ddrelay::dev`, `super::dev`, `dev::…`.
fn dev_path(line: &str) -> bool {
    dev_words(line)
        .into_iter()
        .any(|i| line[i + 3..].starts_with("::") || line[..i].ends_with("::"))
}

/// Whether a `use` statement (its lines joined) imports `dev` itself, as in
/// `use crate::{app, dev};`.
fn dev_import(statement: &str) -> bool {
    !dev_words(statement).is_empty()
}

/// What `file` (relative to `src/`) may not say: every line with a path
/// through `dev` and every `use` naming it, except in `lib.rs` the
/// module's one declaration.
fn violations(relative: &str, text: &str) -> Vec<String> {
    if FRONT.contains(&relative) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut statement: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if relative == "lib.rs" && trimmed == "pub mod dev;" {
            continue;
        }
        let starts_use = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .any(|p| trimmed.starts_with(p));
        if statement.is_none() && starts_use {
            statement = Some((i, String::new()));
        }
        if let Some((start, joined)) = &mut statement {
            joined.push_str(trimmed);
            joined.push(' ');
            if trimmed.ends_with(';') {
                if dev_import(joined) {
                    out.push(format!("src/{relative}:{}: {}", *start + 1, joined.trim()));
                }
                statement = None;
            }
            continue;
        }
        if dev_path(line) {
            out.push(format!("src/{relative}:{}: {trimmed}", i + 1));
        }
    }
    out
}

#[test]
fn the_product_does_not_use_the_development_tools() {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    let mut found = Vec::new();
    let mut product = 0;
    for path in &files {
        let relative = path.strip_prefix(&root).unwrap().to_string_lossy();
        let relative = relative.replace('\\', "/");
        if relative == "dev.rs" || relative.starts_with("dev/") {
            continue;
        }
        product += 1;
        found.extend(violations(&relative, &fs::read_to_string(path).unwrap()));
    }
    assert!(product > 50, "only {product} product files under src/");
    assert!(
        found.is_empty(),
        "the product names the development tools (src/dev/; only src/cli.rs may):\n{}",
        found.join("\n")
    );
}

#[test]
fn lib_declares_dev_hidden() {
    let lib = fs::read_to_string(src().join("lib.rs")).unwrap();
    assert!(
        lib.contains("#[doc(hidden)]\npub mod dev;"),
        "src/lib.rs declares `#[doc(hidden)] pub mod dev;`"
    );
    for tool in ["fakedog", "tls", "sandbox", "demo", "bench", "fuzzing"] {
        assert!(
            !src().join(format!("{tool}.rs")).exists() && !src().join(tool).exists(),
            "src/{tool} belongs under src/dev/"
        );
    }
}

#[test]
fn the_scan_sees_every_form() {
    for bad in [
        "use crate::dev::fakedog::Browser;",
        "    let b = crate::dev::fakedog::Browser::new(&ca, dog, &[]);",
        "use crate::{app, dev};",
        "use crate::{\n    app,\n    dev,\n};",
        "use crate::{\n    dev::sandbox,\n};",
        "use super::dev;",
        "    dev::demo::run(true)",
        "/// See [`crate::dev::tls`].",
        "use ddrelay::dev::sandbox::Relay;",
        "pub use crate::dev::fakedog as fakedog;",
    ] {
        assert_eq!(violations("ops.rs", bad).len(), 1, "missed: {bad}");
    }
    for fine in [
        "let stddev = 1.0;",
        "let path = \"/dev/null\";",
        "device::open()",
        "// a developer's note",
        "use crate::devices::X;",
        "use crate::{app, config};",
    ] {
        assert!(violations("ops.rs", fine).is_empty(), "false alarm: {fine}");
    }
    assert!(violations("cli.rs", "use crate::dev::demo;").is_empty());
    assert!(violations("lib.rs", "#[doc(hidden)]\npub mod dev;").is_empty());
    assert_eq!(violations("lib.rs", "pub use dev::fakedog;").len(), 1);
}

/// The modules `src/lib.rs` and `src/dev.rs` declare, as `dev::bench` for
/// the tools.
fn declared_modules() -> Vec<String> {
    let mut out = Vec::new();
    for (file, prefix) in [("lib.rs", ""), ("dev.rs", "dev::")] {
        let text = fs::read_to_string(src().join(file)).unwrap();
        for line in text.lines() {
            let line = line.trim();
            let rest = ["pub mod ", "pub(crate) mod ", "mod "]
                .iter()
                .find_map(|p| line.strip_prefix(p));
            if let Some(name) = rest.and_then(|r| r.strip_suffix(';')) {
                out.push(format!("{prefix}{name}"));
            }
        }
    }
    out
}

/// The backticked repository paths `doc` names (`src/queue.rs`,
/// `src/proxy/`), wildcards and placeholders left out.
fn named_paths(doc: &str) -> Vec<String> {
    let roots = [
        "src/",
        "tests/",
        "migrations/",
        "examples/",
        "docs/",
        "fuzz/",
        "scripts/",
        "config/",
        "packaging/",
    ];
    doc.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| roots.iter().any(|r| s.starts_with(r)))
        .filter(|s| !s.contains(['*', '{', ' ', '<']))
        .map(str::to_string)
        .collect()
}

/// README's "where things live" table, ARCHITECTURE.md's module table and
/// the tree agree: every path either names exists, every module has a row
/// in ARCHITECTURE.md, and README points at each module's file.
#[test]
fn the_maps_of_the_tree_agree_with_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let architecture = fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut wrong = Vec::new();
    for (name, doc) in [("README.md", &readme), ("ARCHITECTURE.md", &architecture)] {
        for path in named_paths(doc) {
            if !root.join(&path).exists() {
                wrong.push(format!("{name} names {path}, which does not exist"));
            }
        }
    }
    let modules = declared_modules();
    assert!(modules.len() > 25, "only {} modules found", modules.len());
    for module in &modules {
        if !architecture.contains(&format!("| `{module}`"))
            && !architecture.contains(&format!("`{module}` |"))
            && !architecture.contains(&format!("`{module}`,"))
        {
            wrong.push(format!(
                "ARCHITECTURE.md's module table has no row for `{module}`"
            ));
        }
        let file = module.replace("::", "/");
        if !readme.contains(&format!("src/{file}.rs")) && !readme.contains(&format!("src/{file}/"))
        {
            wrong.push(format!("README.md's table does not point at src/{file}.rs"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
