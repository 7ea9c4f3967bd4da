//! Comments cite only documents in the repository, and every citation
//! resolves.
//!
//! A citation is a path to a Markdown file of the repository followed by a
//! space and a heading in double quotes: `docs/datadog.md "Rate limits"`,
//! `README.md "Sending a customer's data"`, `BENCHMARKS.md "Change 5: …"`.
//! Every `.rs` file under `src/`, `tests/`, `examples/`, `benches/` and
//! `fuzz/`, and every `.toml` file under `config/`, is read with its comment
//! markers removed and its lines joined, so a citation may wrap across
//! comment lines. This test fails on:
//! - a Markdown path that names no file of the repository;
//! - a heading that is not a heading (`#` to `######`, outside code
//!   blocks, exact text) of the file it follows;
//! - a citation in another form (`FILE.md, "Heading"`, `FILE.md ("Heading")`);
//! - citations of documents that do not ship: the research notes' section
//!   numbers (`§4.1` not after an RFC), their short names for sources, the
//!   seed documents, the project's brief ("the contract"), issue numbers.
//!
//! Each problem is printed as `file:line: what`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Directories whose `.rs` files are scanned.
const RUST_DIRS: [&str; 5] = ["src", "tests", "examples", "benches", "fuzz"];
/// Directories whose `.toml` files are scanned (comments start with `#`).
const TOML_DIRS: [&str; 1] = ["config"];

/// Leftovers of citations of documents outside the repository.
const FORBIDDEN: [&str; 20] = [
    "reference §",
    "peers.md §",
    "datadog-api.md",
    "shared/reference",
    "shared/contract",
    "shared/seeds",
    "contract.md",
    "seed \"",
    "DOC-EP",
    "DOC-IN",
    "DOC-API-INT",
    "GO-CLI",
    "RUST-CLI",
    "SPEC-V1",
    "SPEC-V2",
    "CLAUDE-PLUGIN",
    "(contract",
    "contract's \"",
    "contract: \"",
    "per the contract",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Files under `dir` (recursively) whose name ends with `ext`, skipping
/// build output.
fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                files(&path, ext, out);
            }
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

/// A source file as one line of text: comment markers removed, `\"`
/// unescaped, lines joined by a space; `starts[i]` is where line `i + 1`
/// begins in `text`.
struct Flat {
    text: String,
    starts: Vec<usize>,
}

impl Flat {
    fn new(source: &str, toml: bool) -> Flat {
        let mut text = String::new();
        let mut starts = Vec::new();
        for line in source.lines() {
            let t = line.trim_start();
            let body = if toml {
                t.strip_prefix('#').unwrap_or(t)
            } else if t.starts_with("//") {
                t.trim_start_matches('/').trim_start_matches('!')
            } else {
                t
            };
            starts.push(text.len());
            text.push_str(&body.trim().replace("\\\"", "\""));
            text.push(' ');
        }
        Flat { text, starts }
    }

    /// The line (1-based) that holds byte `at` of `text`.
    fn line(&self, at: usize) -> usize {
        self.starts.partition_point(|&s| s <= at)
    }
}

/// Every heading of a Markdown document, outside fenced code blocks.
fn headings(markdown: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let rest = line.trim_start_matches('#');
        let level = line.len() - rest.len();
        if level <= 6 && rest.starts_with(' ') {
            out.insert(rest.trim().trim_end_matches('#').trim().to_string());
        }
    }
    out
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')
}

/// Whitespace runs as one space, as the heading reads when a comment wraps.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What was found in the scanned files.
#[derive(Default)]
struct Report {
    problems: Vec<String>,
    citations: usize,
    headings: BTreeMap<PathBuf, Option<BTreeSet<String>>>,
}

impl Report {
    fn problem(&mut self, file: &str, flat: &Flat, at: usize, what: impl Into<String>) {
        let line = flat.line(at);
        self.problems
            .push(format!("{file}:{line}: {}", what.into()));
    }

    /// The headings of `doc` (relative to the root), `None` if it is not a file.
    fn headings_of(&mut self, doc: &str) -> Option<&BTreeSet<String>> {
        let path = root().join(doc);
        self.headings
            .entry(path.clone())
            .or_insert_with(|| fs::read_to_string(&path).ok().map(|md| headings(&md)))
            .as_ref()
    }

    /// Every `PATH.md` in `flat`: the file must exist, and a citation must
    /// be `PATH.md "Heading"` with a heading of that file.
    fn check_citations(&mut self, file: &str, flat: &Flat) {
        for Mention { at, doc, form } in mentions(&flat.text) {
            let Some(headings) = self.headings_of(doc) else {
                self.problem(
                    file,
                    flat,
                    at,
                    format!("{doc}: no such file in the repository"),
                );
                continue;
            };
            let found = matches!(&form, Form::Cited(h) if headings.contains(h));
            self.citations += usize::from(matches!(form, Form::Cited(_)));
            let what = match form {
                Form::Bare => continue,
                Form::Cited(_) if found => continue,
                Form::Cited(heading) => format!("{doc} has no heading \"{heading}\""),
                Form::Unterminated => format!("{doc}: unterminated heading"),
                Form::Other(shown) => format!("{doc}{shown}…: cite as {doc} \"Heading\""),
            };
            self.problem(file, flat, at, what);
        }
    }

    /// Citations of documents that do not ship with the repository.
    fn check_leftovers(&mut self, file: &str, flat: &Flat) {
        for (at, what) in leftovers(&flat.text) {
            self.problem(file, flat, at, what);
        }
    }
}

/// A Markdown path in the text, and what follows it.
struct Mention<'a> {
    at: usize,
    doc: &'a str,
    form: Form,
}

enum Form {
    /// Not followed by a quote: a mention, not a citation.
    Bare,
    /// `PATH.md "Heading"`, the heading on one line.
    Cited(String),
    Unterminated,
    /// A quote soon after, in another form (`, "`, ` ("`): what precedes it.
    Other(String),
}

/// Every `PATH.md` in `text` (not `.mdx`, not a URL).
fn mentions(text: &str) -> Vec<Mention<'_>> {
    let mut out = Vec::new();
    for (dot, _) in text.match_indices(".md") {
        let end = dot + 3;
        if text[end..].starts_with(|c: char| c.is_ascii_alphanumeric()) {
            continue;
        }
        let at = text[..dot]
            .char_indices()
            .rev()
            .take_while(|&(_, c)| is_path_char(c))
            .last()
            .map_or(dot, |(i, _)| i);
        let doc = text[at..end].trim_start_matches("./");
        if doc.starts_with('.') || doc.contains("://") {
            continue;
        }
        let rest = &text[end..];
        let form = if let Some(quoted) = rest.strip_prefix(" \"") {
            match quoted.find('"') {
                Some(close) => Form::Cited(one_line(&quoted[..close])),
                None => Form::Unterminated,
            }
        } else {
            match rest.chars().take(4).position(|c| c == '"') {
                Some(q) if q > 0 => Form::Other(rest.chars().take(q + 1).collect()),
                _ => Form::Bare,
            }
        };
        out.push(Mention { at, doc, form });
    }
    out
}

/// Where `text` cites a document outside the repository, and how.
fn leftovers(text: &str) -> Vec<(usize, String)> {
    let mut hits = Vec::new();
    for needle in FORBIDDEN {
        for (at, _) in text.match_indices(needle) {
            hits.push((
                at,
                format!("cites a document outside the repository: {needle:?}"),
            ));
        }
    }
    for (at, _) in text.match_indices('§') {
        let from = text[..at]
            .char_indices()
            .rev()
            .nth(11)
            .map_or(0, |(i, _)| i);
        let before = &text[from..at];
        if !before.contains("RFC ") && !before.contains("BCP ") {
            hits.push((at, "a section number (§) of no RFC: cite a heading".into()));
        }
    }
    let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    for (at, _) in text.match_indices("PUP") {
        if !word(text[..at].chars().last()) && !word(text[at + 3..].chars().next()) {
            hits.push((at, "cites a source by its short name: PUP".into()));
        }
    }
    let lower = text.to_ascii_lowercase();
    for needle in ["issue ", "issues "] {
        for (at, _) in lower.match_indices(needle) {
            let after = lower[at + needle.len()..].trim_start_matches('#');
            if after.starts_with(|c: char| c.is_ascii_digit()) {
                hits.push((at, "cites an issue number: give the reason instead".into()));
            }
        }
    }
    hits
}

fn scan() -> Report {
    let root = root();
    let mut sources = Vec::new();
    for dir in RUST_DIRS {
        files(&root.join(dir), "rs", &mut sources);
    }
    let rust = sources.len();
    for dir in TOML_DIRS {
        files(&root.join(dir), "toml", &mut sources);
    }
    let this = root.join(file!());
    let mut report = Report::default();
    for (i, path) in sources.iter().enumerate() {
        if *path == this || path.ends_with("tests/citations.rs") {
            continue; // its own needles would match
        }
        let source = fs::read_to_string(path).unwrap_or_default();
        let flat = Flat::new(&source, i >= rust);
        let name = path
            .strip_prefix(&root)
            .unwrap_or(path)
            .display()
            .to_string();
        report.check_citations(&name, &flat);
        report.check_leftovers(&name, &flat);
    }
    report.problems.sort();
    report
}

#[test]
fn every_citation_names_a_document_and_a_heading_of_it() {
    let report = scan();
    assert!(
        report.problems.is_empty(),
        "{} unresolved citation(s):\n{}",
        report.problems.len(),
        report.problems.join("\n")
    );
    // The scanner found what it is for (a broken one would pass on nothing).
    assert!(
        report.citations > 50,
        "only {} citations found",
        report.citations
    );
}

#[test]
fn headings_are_read_as_written() {
    let md = "# Title\n\nText.\n\n## Rate limits\n\n```sh\n# not a heading\n```\n\n### Nested ###\n#not one\n";
    let h = headings(md);
    let want: BTreeSet<String> = ["Title", "Rate limits", "Nested"].map(String::from).into();
    assert_eq!(h, want);
}

#[test]
fn a_citation_may_wrap_and_other_forms_are_refused() {
    let flat = Flat::new(
        "//! See docs/datadog.md \"What Datadog accepts and\n//! drops or cuts\".\n\
         /// Wrong: docs/datadog.md, \"Tags\"; docs/datadog.md (\"Tags\").\n\
         // issue 8, reference §4.1, RFC 6749 §4.1.2 (fine).\n",
        false,
    );
    let mut report = Report::default();
    report.check_citations("x.rs", &flat);
    report.check_leftovers("x.rs", &flat);
    assert_eq!(report.citations, 1);
    assert_eq!(
        report.problems,
        [
            "x.rs:3: docs/datadog.md, \"…: cite as docs/datadog.md \"Heading\"",
            "x.rs:3: docs/datadog.md (\"…: cite as docs/datadog.md \"Heading\"",
            "x.rs:4: cites a document outside the repository: \"reference §\"",
            "x.rs:4: a section number (§) of no RFC: cite a heading",
            "x.rs:4: cites an issue number: give the reason instead",
        ]
        .map(String::from)
    );
}
