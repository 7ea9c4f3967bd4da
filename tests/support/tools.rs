//! The external programs some tests drive (scripts/test installs them):
//! finding one, or skipping without it, and the flags headless Chromium
//! needs on this kind of machine.

use std::process::Command;

/// The path of the program `name` (a name on PATH, or a path), or `None`
/// after saying the caller skips; under DDRELAYTEST_REQUIRE_EXTERNAL=1 a
/// missing program fails the test instead.
pub fn tool(name: &str) -> Option<String> {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .ok()
        .filter(|o| o.status.success());
    match found {
        Some(o) => Some(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        None => {
            assert!(
                !super::require_external(),
                "{name} is required (run scripts/test)"
            );
            eprintln!("skipping: {name} is not installed (run scripts/test)");
            None
        }
    }
}

/// Headless Chromium's flags for a test: no sandbox (containers), no GPU,
/// nothing fetched in the background, shared memory off /dev/shm.
pub const CHROMIUM_FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];
