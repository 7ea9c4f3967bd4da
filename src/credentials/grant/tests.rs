//! The grant check's scheduling on paused tokio time, against a scripted
//! probe: spread, coverage within the interval, retries.

use std::sync::Mutex;

use tokio::time::Instant;

use super::*;

#[test]
fn per_tick_spreads_twice_as_fast_as_even() {
    assert_eq!(per_tick(10_000, Duration::from_secs(3600)), 6);
    assert_eq!(per_tick(1, Duration::from_secs(5)), 1);
    assert_eq!(per_tick(0, Duration::from_secs(5)), 1);
    assert_eq!(per_tick(100, Duration::from_secs(100)), 2);
}

#[test]
fn due_takes_the_oldest_confirmations_first() {
    let connected = vec![
        ("fresh".to_string(), Some(990)),
        ("old".to_string(), Some(100)),
        ("never".to_string(), None),
        ("older".to_string(), Some(50)),
        ("busy".to_string(), None),
        ("retrying".to_string(), None),
    ];
    let busy: HashSet<String> = ["busy".to_string()].into();
    let retry: HashMap<String, i64> = [("retrying".to_string(), 1001)].into();
    let i = Duration::from_secs(600);
    assert_eq!(
        due(&connected, 1000, i, &busy, &retry, 10),
        vec!["never", "older", "old"]
    );
    assert_eq!(
        due(&connected, 1000, i, &busy, &retry, 2),
        vec!["never", "older"]
    );
    // Later: exactly one interval old is due, the retry time has come.
    assert_eq!(
        due(&connected, 1590, i, &busy, &retry, 10),
        vec!["never", "retrying", "older", "old", "fresh"]
    );
    assert!(due(&connected, 1000, i, &busy, &retry, 0).is_empty());
}

/// A scripted Datadog: confirms (or cannot decide for the first
/// `undecided` checks of a tenant), records when each check started.
struct Scripted {
    start: Instant,
    confirmed: Mutex<HashMap<String, Option<i64>>>,
    checks: Mutex<Vec<(String, i64)>>,
    undecided: Mutex<HashMap<String, u32>>,
}

impl Scripted {
    fn new(tenants: usize) -> Arc<Scripted> {
        Arc::new(Scripted {
            start: Instant::now(),
            confirmed: Mutex::new((0..tenants).map(|i| (format!("t{i:03}"), None)).collect()),
            checks: Mutex::new(Vec::new()),
            undecided: Mutex::new(HashMap::new()),
        })
    }

    fn checks_of(&self, id: &str) -> Vec<i64> {
        let checks = self.checks.lock().unwrap();
        checks
            .iter()
            .filter(|(t, _)| t == id)
            .map(|(_, at)| *at)
            .collect()
    }
}

impl Probe for Scripted {
    fn connected(&self) -> Vec<(String, Option<i64>)> {
        let c = self.confirmed.lock().unwrap();
        c.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    fn check(&self, tenant: String, _since: i64) -> Pending {
        let now = self.now();
        self.checks.lock().unwrap().push((tenant.clone(), now));
        let mut undecided = self.undecided.lock().unwrap();
        if let Some(n) = undecided.get_mut(&tenant).filter(|n| **n > 0) {
            *n -= 1;
            return Box::pin(async { Checked::Undecided("Datadog answered 503".into()) });
        }
        self.confirmed.lock().unwrap().insert(tenant, Some(now));
        // A refresh takes a little while.
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            Checked::Confirmed
        })
    }

    fn now(&self) -> i64 {
        1_000_000 + self.start.elapsed().as_secs() as i64
    }
}

async fn run_for(probe: Arc<Scripted>, interval: Duration, for_secs: u64) {
    let shutdown = Shutdown::new();
    let task = tokio::spawn(run(probe, move || interval, shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(for_secs)).await;
    shutdown.trigger();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn every_grant_is_confirmed_within_the_interval_and_spread_over_it() {
    let probe = Scripted::new(100);
    let interval = Duration::from_secs(100);
    run_for(probe.clone(), interval, 350).await;

    let start = 1_000_000;
    let mut per_second: HashMap<i64, usize> = HashMap::new();
    for (_, at) in probe.checks.lock().unwrap().iter() {
        *per_second.entry(*at).or_default() += 1;
    }
    let most = per_second.values().max().copied().unwrap_or(0);
    assert!(
        most <= per_tick(100, interval),
        "{most} checks in one second"
    );
    for i in 0..100 {
        let id = format!("t{i:03}");
        let at = probe.checks_of(&id);
        assert!(
            at[0] - start <= 60,
            "{id} first checked after {} s",
            at[0] - start
        );
        for pair in at.windows(2) {
            let gap = pair[1] - pair[0];
            assert!((100..=102).contains(&gap), "{id} checked {gap} s apart");
        }
        assert!(at.len() >= 3, "{id} checked {} times in 350 s", at.len());
    }
}

#[tokio::test(start_paused = true)]
async fn an_undecided_check_is_retried_later_not_at_once() {
    let probe = Scripted::new(1);
    probe.undecided.lock().unwrap().insert("t000".into(), 2);
    run_for(probe.clone(), Duration::from_secs(3600), 200).await;
    let at = probe.checks_of("t000");
    assert_eq!(at.len(), 3, "two undecided, then confirmed: {at:?}");
    assert_eq!(at[1] - at[0], RETRY_AFTER_SECS, "{at:?}");
    assert_eq!(at[2] - at[1], RETRY_AFTER_SECS, "{at:?}");
}
