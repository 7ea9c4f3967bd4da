//! Every file under config/ is a valid configuration, and `check-config`
//! accepts each one and rejects bad input with one clear line per problem.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};

use ddrelay::config::Config;

fn config_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Runs `ddrelay` with no DDRELAY_* variables from the test's environment.
fn ddrelay(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = support::ddrelay_command();
    cmd.args(args).envs(env.iter().copied());
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn every_config_file_loads() {
    let files = config_files();
    assert!(
        files.len() >= 4,
        "expected the reference and examples, found {files:?}"
    );
    for f in files {
        if let Err(e) = Config::load_with_env(&f, &[]) {
            panic!("{} does not load:\n{e}", f.display());
        }
    }
}

#[test]
fn check_config_accepts_every_example_and_redacts() {
    for f in config_files() {
        let (ok, out, err) = ddrelay(&["check-config", "--config", f.to_str().unwrap()], &[]);
        assert!(ok, "{}: {err}", f.display());
        assert!(out.contains("[redacted]"), "{out}");
        for secret in [
            "replace-with-the-client-secret",
            "replace-with-a-long-random-admin-token",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ] {
            assert!(
                !out.contains(secret) && !err.contains(secret),
                "{} leaks {secret}",
                f.display()
            );
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const GOOD: &str = r#"
[oauth]
client_id = "client"
client_secret = "client-secret-value"
redirect_uri = "https://relay.example/oauth/callback"
[server]
admin_token = "admin-token-0123456789"
[storage]
data_dir = "/tmp/ddrelay-check"
master_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
"#;

#[test]
fn check_config_rejects_each_problem_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown key",
            GOOD.replace("[server]", "[server]\nadmin_tokn = \"x\""),
            vec!["server.admin_tokn", "unknown key"],
        ),
        (
            "missing client_id",
            GOOD.replace("client_id = \"client\"\n", ""),
            vec!["oauth.client_id", "missing"],
        ),
        (
            "malformed toml",
            GOOD.replace("[server]", "[server"),
            vec!["bad.toml"],
        ),
        (
            "wrong type",
            GOOD.replace("[server]", "[server]\nmax_body = [1]"),
            vec!["server.max_body", "expected"],
        ),
        (
            "missing master key",
            GOOD.replace(
                "master_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n",
                "",
            ),
            vec!["storage.master_key", "missing"],
        ),
        (
            "malformed master key",
            GOOD.replace(
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                "dG9vIHNob3J0",
            ),
            vec!["storage.master_key", "expected exactly 32"],
        ),
        (
            "plain http webhook off loopback",
            format!(
                "{GOOD}\n[webhooks]\nurl = \"http://partner.example/hooks\"\nsecret = \"client-secret-value-webhook\"\n"
            ),
            vec!["webhooks.url", "loopback"],
        ),
    ];
    for (what, text, needles) in cases {
        let path = write(dir.path(), "bad.toml", &text);
        let (ok, _out, err) = ddrelay(&["check-config", "--config", path.to_str().unwrap()], &[]);
        assert!(!ok, "{what}: accepted");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{what}: expected one line, got {err}");
        assert!(
            lines[0].contains("bad.toml"),
            "{what}: file not named: {err}"
        );
        for n in needles {
            assert!(lines[0].contains(n), "{what}: `{n}` not in: {err}");
        }
        assert!(
            !err.contains("client-secret-value"),
            "{what}: secret leaked: {err}"
        );
    }
}

#[test]
fn missing_file_and_env_override_are_named() {
    let (ok, _, err) = ddrelay(
        &["check-config", "--config", "/nonexistent/ddrelay.toml"],
        &[],
    );
    assert!(!ok);
    assert!(
        err.contains("/nonexistent/ddrelay.toml") && err.contains("cannot read"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "good.toml", GOOD);
    let (ok, _, err) = ddrelay(
        &["check-config", "--config", path.to_str().unwrap()],
        &[("DDRELAY_SERVER__API_LISTEN", "nonsense")],
    );
    assert!(!ok);
    assert!(
        err.contains("DDRELAY_SERVER__API_LISTEN") && err.contains("server.api_listen"),
        "{err}"
    );
    let (ok, out, _) = ddrelay(
        &["check-config", "--config", path.to_str().unwrap()],
        &[("DDRELAY_SERVER__API_LISTEN", "127.0.0.1:9999")],
    );
    assert!(ok && out.contains("127.0.0.1:9999"), "{out}");
}

#[test]
fn help_works_for_every_command() {
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["check-config", "--help"],
    ] {
        let (ok, out, _) = ddrelay(&args, &[]);
        assert!(ok && out.contains("Usage"), "{args:?}: {out}");
    }
}
