//! One take of a stream, from the queue to Datadog's answers: read records
//! within the in-flight budget, keep only those of the tenant's current
//! connection, plan them (`plan.rs`), pack and send the payloads through
//! the [`Intake`](crate::pipeline::seam::Intake) seam, and settle each
//! record from the answers (ack, dead-letter, or back to the queue).

use std::ops::Range;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use super::{MAX_RECORDS_PER_TAKE, Outcome, Pipeline, encoding_for};
use crate::clock::now_ms;
use crate::credentials::CredentialError;
use crate::pipeline::batch::{BatchError, Packer, Payload};
use crate::pipeline::plan::{Plan, Settlement, Step, Work, plan};
use crate::pipeline::record::{self, Ready};
use crate::pipeline::retry::Verdict;
use crate::pipeline::seam::{Request, Sent};
use crate::queue::{RecordId, Taken};
use crate::secret::Secret;
use crate::site::{Endpoint, Site};
use crate::telemetry::metrics::{
    KindLabels, KindReason, KindSite, SendLabels, retry_reason, status_class,
};

/// Records read from the queue, with the budget they hold.
struct Take {
    records: Vec<Taken>,
    /// In-flight KiB, given back when the take ends.
    inflight: OwnedSemaphorePermit,
    /// The packing permit held since the read, for the first pack.
    prepare: OwnedSemaphorePermit,
}

/// The stream a take sends for, and what it sends with.
struct Stream<'a> {
    tenant: &'a Arc<str>,
    endpoint: Endpoint,
    site: &'static Site,
    key: Secret,
}

impl Pipeline {
    /// Sends one take's worth of a stream.
    pub(super) async fn deliver(&self, tenant: &Arc<str>, code: u8, endpoint: Endpoint) -> Outcome {
        let take = match self.take(tenant, code, endpoint).await {
            Ok(take) => take,
            Err(outcome) => return outcome,
        };
        // The site, key and connection generation, read together: records
        // accepted for an earlier connection (before a DELETE, or for
        // another org or site) are never sent with this one's key.
        let sending = match self.keys.sending(tenant).await {
            Ok(s) => s,
            Err(e) => {
                self.queue.release(&ids(&take.records));
                return hold(e);
            }
        };
        let taken =
            self.discard_other_connections(tenant, endpoint, take.records, sending.generation);
        if taken.is_empty() {
            return Outcome::Done;
        }
        let cutoff_ms = now_ms() - endpoint.window().past.as_millis() as i64;
        let mut plan = plan(&taken, endpoint, cutoff_ms);
        let stream = Stream {
            tenant,
            endpoint,
            site: sending.site,
            key: sending.key,
        };
        self.drop_unsendable(&stream, &taken, &plan);
        let stop = self
            .send_plan(&stream, &taken, &mut plan, take.prepare)
            .await;
        self.finish(&stream, &taken, &plan);
        drop(take.inflight);
        stop.unwrap_or(Outcome::Done)
    }

    /// Reads a take within the in-flight budget.
    ///
    /// A take stays in memory until Datadog answers its payloads. The
    /// largest usual take is reserved and what it did not use given back
    /// once read. A take can be larger (one ingest request is one record,
    /// up to `server.max_decompressed_body`): then everything is given back
    /// and its real size reserved, waiting while holding nothing, so two
    /// takes never wait for each other's budget. The budget is taken before
    /// the packing permit (never the other way round), so holders of a
    /// packing permit never wait for the budget.
    async fn take(&self, tenant: &Arc<str>, code: u8, endpoint: Endpoint) -> Result<Take, Outcome> {
        let limits = endpoint.limits();
        let max_records = if endpoint == Endpoint::Events {
            64
        } else {
            MAX_RECORDS_PER_TAKE
        };
        let mut want_kib = (limits.max_uncompressed / 1024 + 1).min(self.inflight_kib);
        loop {
            let budget = self.inflight.clone().acquire_many_owned(want_kib as u32);
            let Ok(mut inflight) = budget.await else {
                return Err(Outcome::Idle);
            };
            // Reading and packing do CPU work: at most one take per core is
            // being prepared at a time (the permit is given back once the
            // payloads are packed, before they are sent).
            let Ok(prepare) = self.packing.clone().acquire_owned().await else {
                return Err(Outcome::Idle);
            };
            // Reading records is disk I/O and CRC work: off the async
            // workers, at delivery's lower priority.
            let (queue, name) = (self.queue.clone(), tenant.clone());
            let read = self
                .read
                .run(move || queue.take(&name, code, max_records, limits.max_uncompressed))
                .await;
            let records = match read
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
            {
                Ok(t) if t.is_empty() => return Err(Outcome::Idle),
                Ok(t) => t,
                Err(e) => return Err(Outcome::retry(format!("queue read failed: {e}"))),
            };
            let used_kib = kib(&records);
            if used_kib <= want_kib || want_kib == self.inflight_kib {
                if used_kib < want_kib {
                    drop(inflight.split(want_kib - used_kib));
                }
                return Ok(Take {
                    records,
                    inflight,
                    prepare,
                });
            }
            self.queue.release(&ids(&records));
            want_kib = used_kib.min(self.inflight_kib);
        }
    }

    /// Sends the plan's work in order; returns why it stopped early, if it
    /// did (what is not settled then goes back to the queue).
    async fn send_plan(
        &self,
        s: &Stream<'_>,
        taken: &[Taken],
        plan: &mut Plan,
        prepare: OwnedSemaphorePermit,
    ) -> Option<Outcome> {
        let config = self.config();
        let encoding = encoding_for(s.endpoint, &config);
        let packer = Packer::new(s.endpoint, encoding, config.delivery.compression_level);
        let mut prepare = Some(prepare);
        let mut work = plan.work(s.endpoint);
        while let Some(w) = work.pop_front() {
            let packed = match &w.ready[..] {
                [] => {
                    let packed = self
                        .pack(&packer, plan, w.range.clone(), w.max_items, prepare.take())
                        .await;
                    match packed {
                        Ok(p) => p,
                        Err(why) => return Some(Outcome::retry(why)),
                    }
                }
                [(_, ready)] => vec![Ok(ready.payload(s.endpoint))],
                // Pieces spliced: their compressed bytes copied once, with
                // nothing decompressed or compressed again.
                pieces => {
                    let pieces: Vec<&Ready> = pieces.iter().map(|(_, r)| r).collect();
                    vec![Ok(record::spliced(s.endpoint, &pieces))]
                }
            };
            for result in packed {
                let payload = match result {
                    Ok(p) => p,
                    Err(e) => {
                        let r = shift(e.items(), w.range.start);
                        self.dead_letter(s, 0, &e.to_string(), &plan.items_in(r.clone()));
                        plan.settle(r);
                        continue;
                    }
                };
                let r = shift(payload.items(), w.range.start);
                let sent = self.send_payload(s, &payload).await;
                let verdict = Verdict::of(&sent);
                let answered = match verdict {
                    Verdict::DeadLetter | Verdict::Split if !w.ready.is_empty() => {
                        self.fall_back(s, taken, plan, &w, r)
                    }
                    _ => vec![r],
                };
                for r in answered {
                    match plan.answered(r.clone(), verdict) {
                        Step::Next => self.count_delivered(s, r.len(), payload.body.len()),
                        Step::DeadLetter(r) => {
                            let (status, why) = answer_text(&sent);
                            self.dead_letter(s, status, &why, &plan.items_in(r));
                        }
                        Step::Split(r, half) => {
                            self.count_split(s, r.len());
                            work.push_back(Work {
                                range: r,
                                max_items: half,
                                ready: Vec::new(),
                            });
                        }
                        Step::Stop => return Some(stopped(verdict, &sent, &s.key)),
                    }
                }
            }
        }
        None
    }

    /// Ready records refused or split fall back to their items, rebuilt
    /// into their placeholders; returns the ranges the verdict applies to
    /// (`r`, all of `w`'s items, unless a record cannot be rebuilt: that
    /// one is dead-lettered as stored, and the others' ranges are given).
    /// Inflating here, on an async worker, is acceptable for this rare path.
    fn fall_back(
        &self,
        s: &Stream<'_>,
        taken: &[Taken],
        plan: &mut Plan,
        w: &Work,
        r: Range<usize>,
    ) -> Vec<Range<usize>> {
        let mut rebuilt = Vec::with_capacity(w.ready.len());
        for (rr, ready) in &w.ready {
            match plan.rebuild(ready, s.endpoint, rr.clone()) {
                Ok(()) => rebuilt.push(rr.clone()),
                // Every placeholder run is its record's; were one not,
                // it would stay unsettled and go back to the queue.
                Err(why) => {
                    if let Some(ri) = plan.record_of(rr.start) {
                        self.dead_letter(s, 0, &why, &[&taken[ri].payload]);
                        plan.settle(rr.clone());
                    }
                }
            }
        }
        if rebuilt.len() == w.ready.len() {
            vec![r]
        } else {
            rebuilt
        }
    }

    /// Packs the plan's items `range` on a delivery thread (compression is
    /// CPU work; the async workers and ingest keep answering promptly). The
    /// item table moves to that thread and back, not copied: a light series
    /// item is about 60 bytes, so a copy of the list would cost as much as
    /// the items. If packing fails, the plan is left without items: the
    /// take stops, and nothing of it is settled that was not before.
    async fn pack(
        &self,
        packer: &Packer,
        plan: &mut Plan,
        range: Range<usize>,
        max_items: usize,
        prepare: Option<OwnedSemaphorePermit>,
    ) -> Result<Vec<Result<Payload, BatchError>>, String> {
        let permit = match prepare {
            Some(p) => p,
            None => self
                .packing
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| "shutting down".to_string())?,
        };
        let packer = packer.with_max_items(max_items);
        let items = std::mem::take(&mut plan.items);
        let packed = self
            .work
            .run(move || {
                let packed = packer.pack(&items.view(range));
                (items, packed)
            })
            .await;
        drop(permit);
        let (items, packed) = packed.map_err(|e| format!("packing failed: {e}"))?;
        plan.items = items;
        Ok(packed)
    }

    /// One payload through the tenant's rate limit, a sending slot (held
    /// only for the request itself, see the module doc) and the intake.
    async fn send_payload(&self, s: &Stream<'_>, payload: &Payload) -> Sent {
        let events = if s.endpoint == Endpoint::Events {
            payload.item_count as u32
        } else {
            0
        };
        let limiters = self.limiters.load_full();
        limiters.wait(s.tenant, payload.body.len(), events).await;
        let Ok(_slot) = self.global.acquire().await else {
            return Err(crate::datadog::SendError::Transport(
                "delivery is shutting down".into(),
            ));
        };
        let sent = self
            .intake
            .send(Request {
                site: s.site,
                endpoint: s.endpoint,
                key: &s.key,
                encoding: payload.encoding,
                body: payload.body.clone(),
                timeout: self.config().delivery.request_timeout,
            })
            .await;
        let status_class = match &sent {
            Ok(answer) => status_class(answer.status),
            Err(_) => "transport",
        };
        self.metrics
            .send_requests
            .get_or_create(&SendLabels {
                kind: s.endpoint.name(),
                site: s.site.name,
                status_class,
            })
            .inc();
        sent
    }

    /// Dead-letters damaged records and counts what passed the window.
    fn drop_unsendable(&self, s: &Stream<'_>, taken: &[Taken], plan: &Plan) {
        for (ri, why) in &plan.damaged {
            self.dead_letter(s, 0, why, &[&taken[*ri].payload]);
        }
        if plan.aged > 0 {
            self.count_aged_out(s.tenant, s.endpoint, plan.aged);
            tracing::warn!(tenant = %s.tenant, kind = s.endpoint.name(), items = plan.aged, "items passed datadog's acceptance window while queued; not sent");
        }
    }

    /// Acks the records the plan settled, gives back the others.
    fn finish(&self, s: &Stream<'_>, taken: &[Taken], plan: &Plan) {
        let Settlement { ack, release } = plan.settlement();
        let now = now_ms();
        let latency = self.metrics.end_to_end_seconds.get_or_create(&KindLabels {
            kind: s.endpoint.name(),
        });
        let mut delivered = 0u64;
        for &ri in &ack {
            delivered += u64::from(taken[ri].items);
            latency.observe(((now - taken[ri].created_ms).max(0) as f64) / 1000.0);
        }
        self.queue
            .ack(&ack.iter().map(|&ri| taken[ri].id).collect::<Vec<_>>());
        self.queue
            .release(&release.iter().map(|&ri| taken[ri].id).collect::<Vec<_>>());
        if !ack.is_empty() {
            self.count_delivered_now(s.tenant, delivered, now);
        }
    }

    fn count_delivered(&self, s: &Stream<'_>, items: usize, bytes: usize) {
        let labels = KindSite {
            kind: s.endpoint.name(),
            site: s.site.name,
        };
        self.metrics
            .delivered_items
            .get_or_create(&labels)
            .inc_by(items as u64);
        self.metrics
            .delivered_bytes
            .get_or_create(&labels)
            .inc_by(bytes as u64);
        self.usage(s.tenant, s.endpoint, |c| {
            c.delivered_items += items as u64;
            c.delivered_bytes += bytes as u64;
        });
    }

    fn count_split(&self, s: &Stream<'_>, items: usize) {
        tracing::warn!(tenant = %s.tenant, kind = s.endpoint.name(), items, "datadog answered 413 to a payload within its documented limits; splitting it in halves");
        self.metrics
            .retries
            .get_or_create(&KindReason {
                kind: s.endpoint.name(),
                reason: retry_reason::SPLIT,
            })
            .inc();
    }

    /// Acks (discards) the records of `taken` accepted for another
    /// connection than `generation`, counting them; returns the rest.
    fn discard_other_connections(
        &self,
        tenant: &Arc<str>,
        endpoint: Endpoint,
        taken: Vec<Taken>,
        generation: u32,
    ) -> Vec<Taken> {
        let (keep, other): (Vec<Taken>, Vec<Taken>) =
            taken.into_iter().partition(|t| t.generation == generation);
        if other.is_empty() {
            return keep;
        }
        let items: u64 = other.iter().map(|t| u64::from(t.items)).sum();
        self.queue.ack(&ids(&other));
        self.metrics
            .discarded_items
            .get_or_create(&KindLabels {
                kind: endpoint.name(),
            })
            .inc_by(items);
        self.figures(tenant, |td| td.discarded_items += items);
        self.usage(tenant, endpoint, |c| c.discarded_items += items);
        tracing::warn!(tenant = %tenant, kind = endpoint.name(), items, "items accepted for an earlier connection of the tenant (before a disconnect, or for another org) discarded, not sent");
        keep
    }

    fn dead_letter<T: AsRef<[u8]>>(&self, s: &Stream<'_>, status: u16, answer: &str, items: &[T]) {
        let (tenant, kind) = (s.tenant, s.endpoint.name());
        // Stored first, counted after: a reader who sees the count finds
        // the entry.
        if let Err(e) = self.dead.put(tenant, kind, status, answer, items, now_ms()) {
            tracing::error!(tenant = %tenant, error = %e, items = items.len(), "cannot write the dead-letter area; refused items are lost");
        }
        self.metrics
            .dead_lettered_items
            .get_or_create(&KindLabels { kind })
            .inc_by(items.len() as u64);
        self.figures(tenant, |td| td.dead_lettered_items += items.len() as u64);
        self.usage(tenant, s.endpoint, |c| {
            c.dead_lettered_items += items.len() as u64
        });
        tracing::warn!(tenant = %tenant, kind, status, items = items.len(), answer = %answer, "datadog refused a payload; kept in the dead-letter area");
    }
}

/// Credentials unavailable: held (the tenant is not connected any more, or
/// the store failed, in which case it is retried sooner).
fn hold(e: CredentialError) -> Outcome {
    let transient = e.is_transient() || !matches!(e, CredentialError::Missing(..));
    Outcome::Hold {
        why: e.to_string(),
        transient,
    }
}

/// Why a take stopped, from the answer that stopped it.
fn stopped(verdict: Verdict, sent: &Sent, key: &Secret) -> Outcome {
    match (verdict, sent) {
        (Verdict::Forbidden, Ok(answer)) => Outcome::Forbidden {
            key: key.clone(),
            status: answer.status,
        },
        (Verdict::Retry { after }, Ok(answer)) => Outcome::Retry {
            after,
            why: format!("Datadog answered {}: {}", answer.status, answer.excerpt),
        },
        (_, Err(e)) => Outcome::retry(e.to_string()),
        (_, Ok(answer)) => Outcome::retry(format!("Datadog answered {}", answer.status)),
    }
}

/// The status and text to keep with dead-lettered items.
fn answer_text(sent: &Sent) -> (u16, String) {
    match sent {
        Ok(a) => (a.status, a.excerpt.clone()),
        Err(e) => (0, e.to_string()),
    }
}

/// KiB of in-flight budget a take holds (rounded up).
fn kib(taken: &[Taken]) -> usize {
    taken.iter().map(|t| t.payload.len()).sum::<usize>() / 1024 + 1
}

fn ids(taken: &[Taken]) -> Vec<RecordId> {
    taken.iter().map(|t| t.id).collect()
}

fn shift(r: std::ops::Range<usize>, by: usize) -> std::ops::Range<usize> {
    r.start + by..r.end + by
}
