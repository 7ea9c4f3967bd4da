//! The 401/403 policy ([`refresh_once`]) against scripted tokens and calls.

use std::cell::RefCell;

use super::*;

/// Tokens: `t0` first, then `t1`, `t2`, ... for each forced refresh (or
/// the error when `fail_refresh`); records what each call was made with.
struct Script {
    issued: RefCell<u32>,
    fail_refresh: bool,
    calls: RefCell<Vec<String>>,
}

impl Script {
    fn new(fail_refresh: bool) -> Script {
        Script {
            issued: RefCell::new(0),
            fail_refresh,
            calls: RefCell::new(Vec::new()),
        }
    }

    async fn token(&self, seen: Option<Secret>) -> Result<Secret, CredentialError> {
        if seen.is_some() {
            if self.fail_refresh {
                return Err(CredentialError::ShuttingDown);
            }
            *self.issued.borrow_mut() += 1;
        }
        Ok(Secret::new(format!("t{}", self.issued.borrow())))
    }
}

/// Runs the policy where Datadog refuses every token in `refused_tokens`.
async fn run(
    script: &Script,
    refused_tokens: &[&str],
    settled: &[&str],
) -> (Authorized<String>, Vec<String>) {
    let call = |t: Secret| {
        script.calls.borrow_mut().push(t.expose().to_string());
        let answer = if refused_tokens.contains(&t.expose()) {
            "403".to_string()
        } else {
            "200".to_string()
        };
        async move { answer }
    };
    let (outcome, used) = refresh_once(
        |seen| script.token(seen),
        call,
        |a: &String| a == "403",
        |t: &Secret| settled.contains(&t.expose()),
    )
    .await
    .unwrap();
    (
        outcome,
        used.iter().map(|t| t.expose().to_string()).collect(),
    )
}

#[tokio::test]
async fn an_accepted_token_is_not_refreshed() {
    let s = Script::new(false);
    let (outcome, used) = run(&s, &[], &[]).await;
    assert!(matches!(outcome, Authorized::Accepted(ref a) if a == "200"));
    assert_eq!(used, vec!["t0"]);
    assert_eq!(*s.issued.borrow(), 0);
}

#[tokio::test]
async fn a_refused_token_is_refreshed_once_and_the_call_made_again() {
    let s = Script::new(false);
    let (outcome, used) = run(&s, &["t0"], &[]).await;
    assert!(matches!(outcome, Authorized::Accepted(ref a) if a == "200"));
    assert_eq!(used, vec!["t0", "t1"]);
    assert_eq!(*s.calls.borrow(), vec!["t0", "t1"]);
}

#[tokio::test]
async fn a_fresh_token_refused_again_is_not_refreshed_a_second_time() {
    let s = Script::new(false);
    let (outcome, _) = run(&s, &["t0", "t1", "t2"], &[]).await;
    assert!(matches!(
        outcome,
        Authorized::Refused {
            refreshed: true,
            ..
        }
    ));
    assert_eq!(*s.calls.borrow(), vec!["t0", "t1"]);
}

#[tokio::test]
async fn a_settled_token_is_not_refreshed() {
    let s = Script::new(false);
    let (outcome, used) = run(&s, &["t0"], &["t0"]).await;
    assert!(matches!(
        outcome,
        Authorized::Refused {
            refreshed: false,
            ..
        }
    ));
    assert_eq!(used, vec!["t0"]);
    assert_eq!(*s.issued.borrow(), 0);
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_first_answer_and_says_why() {
    let s = Script::new(true);
    let (outcome, used) = run(&s, &["t0"], &[]).await;
    match outcome {
        Authorized::RefreshFailed { answer, error } => {
            assert_eq!(answer, "403");
            assert!(matches!(error, CredentialError::ShuttingDown));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(used, vec!["t0"]);
}
