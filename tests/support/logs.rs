//! Every log line of this test binary, captured from the first call of
//! [`captured`] on. A test binary has one tracing subscriber, so every test
//! in it that calls this shares one buffer: look for what your own test
//! made (its tenant, its secret), not for what is absent in general, unless
//! the binary runs one test.

use std::sync::{Arc, Mutex, OnceLock};

static LOGS: OnceLock<Captured> = OnceLock::new();

/// The captured lines (ANSI-free `fmt` output, `debug`, `ddrelay` at `trace`).
#[derive(Clone, Debug)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capture (once per binary) and returns it.
pub fn captured() -> Captured {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug,ddrelay=trace"))
            .with_ansi(false)
            .with_writer(move || Writer(b.clone()))
            .try_init()
            .expect("the only subscriber of this test binary");
        Captured(buf)
    })
    .clone()
}

impl Captured {
    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// How many bytes are captured: a mark for [`Captured::since`].
    pub fn mark(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// What was captured after `mark`.
    pub fn since(&self, mark: usize) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()[mark..]).into_owned()
    }
}
