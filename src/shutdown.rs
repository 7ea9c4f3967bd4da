//! A shutdown signal every task can wait on.
//!
//! `Shutdown::trigger` is called once (by SIGTERM/SIGINT in `cli.rs`, or by
//! a test); every clone's `wait()` then resolves. Tasks that must finish
//! in-flight work select on `wait()` and then drain.

use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        Shutdown { tx, rx }
    }

    /// Starts the shutdown. Idempotent.
    pub(crate) fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub(crate) fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once [`Shutdown::trigger`] has been called.
    pub(crate) async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means every sender is gone, which is also a shutdown.
        let _ = rx.wait_for(|v| *v).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_trigger() {
        let s = Shutdown::new();
        let c = s.clone();
        let waiter = tokio::spawn(async move { c.wait().await });
        assert!(!s.is_triggered());
        s.trigger();
        waiter.await.unwrap();
        assert!(s.is_triggered());
        s.wait().await;
    }
}
