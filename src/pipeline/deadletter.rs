//! The per-tenant dead-letter area: payloads Datadog refused for good
//! (400, or another non-retryable 4xx), kept on disk so an operator can see
//! what was refused and why. Never silently dropped.
//!
//! Layout: `<data_dir>/dead-letters/<tenant>/<seq>-<kind>.dl`, each file a
//! JSON metadata line followed by the refused items (compact JSON, one per
//! line). Each tenant's area is bounded by `queue.dead_letter_max_bytes`,
//! and all of them together by a total (a sixteenth of `queue.max_bytes`):
//! past either the oldest entries are evicted, counted and logged. The
//! total counts against the queue's disk budget (`Queue::set_outside_bytes`). Tenant ids
//! are validated (`tenant::validate_id`: no `/`, never `.` or `..`), so they
//! are safe directory names.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// One dead-lettered payload, as listed by the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) id: u64,
    pub(crate) kind: String,
    /// Datadog's status and the start of its answer.
    pub(crate) status: u16,
    pub(crate) answer: String,
    pub(crate) items: u64,
    pub(crate) bytes: u64,
    pub(crate) at_ms: i64,
}

#[derive(Debug, Default)]
struct TenantArea {
    entries: VecDeque<Entry>,
    bytes: u64,
    evicted_items: u64,
}

/// Totals for one tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Totals {
    pub(crate) entries: u64,
    pub(crate) items: u64,
    pub(crate) bytes: u64,
    /// Items evicted to stay within the budget since start.
    pub(crate) evicted_items: u64,
}

/// The dead-letter areas of every tenant.
#[derive(Debug)]
pub(crate) struct DeadLetters {
    dir: PathBuf,
    max_bytes_per_tenant: u64,
    /// Every tenant's area together.
    max_bytes_total: u64,
    areas: Mutex<HashMap<String, TenantArea>>,
    next_id: Mutex<u64>,
}

impl DeadLetters {
    /// Opens the areas under `dir`, indexing what is there.
    pub(crate) fn open(
        dir: &Path,
        max_bytes_per_tenant: u64,
        max_bytes_total: u64,
    ) -> std::io::Result<DeadLetters> {
        std::fs::create_dir_all(dir)?;
        let mut areas = HashMap::new();
        let mut next_id = 1;
        for tenant_dir in std::fs::read_dir(dir)? {
            let tenant_dir = tenant_dir?;
            if !tenant_dir.file_type()?.is_dir() {
                continue;
            }
            let tenant = tenant_dir.file_name().to_string_lossy().to_string();
            let mut area = TenantArea::default();
            let mut found = Vec::new();
            for f in std::fs::read_dir(tenant_dir.path())? {
                let path = f?.path();
                if path.extension().is_some_and(|e| e == "dl")
                    && let Some(entry) = read_meta(&path)
                {
                    found.push(entry);
                }
            }
            found.sort_by_key(|e| e.id);
            for e in found {
                next_id = next_id.max(e.id + 1);
                area.bytes += e.bytes;
                area.entries.push_back(e);
            }
            areas.insert(tenant, area);
        }
        Ok(DeadLetters {
            dir: dir.to_path_buf(),
            max_bytes_per_tenant,
            max_bytes_total,
            areas: Mutex::new(areas),
            next_id: Mutex::new(next_id),
        })
    }

    fn path(&self, tenant: &str, e: &Entry) -> PathBuf {
        self.dir
            .join(tenant)
            .join(format!("{:012}-{}.dl", e.id, e.kind))
    }

    /// Stores a refused payload's items. Returns the entry.
    pub(crate) fn put<T: AsRef<[u8]>>(
        &self,
        tenant: &str,
        kind: &str,
        status: u16,
        answer: &str,
        items: &[T],
        at_ms: i64,
    ) -> std::io::Result<Entry> {
        let id = {
            let mut n = self.next_id.lock();
            let id = *n;
            *n += 1;
            id
        };
        let bytes: u64 = items.iter().map(|i| i.as_ref().len() as u64 + 1).sum();
        let entry = Entry {
            id,
            kind: kind.to_string(),
            status,
            answer: answer.chars().take(400).collect(),
            items: items.len() as u64,
            bytes,
            at_ms,
        };
        std::fs::create_dir_all(self.dir.join(tenant))?;
        let path = self.path(tenant, &entry);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        serde_json::to_writer(&mut f, &entry)?;
        f.write_all(b"\n")?;
        for item in items {
            f.write_all(item.as_ref())?;
            f.write_all(b"\n")?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_data()?;
        let mut evict = Vec::new();
        {
            let mut areas = self.areas.lock();
            let area = areas.entry(tenant.to_string()).or_default();
            area.bytes += entry.bytes;
            area.entries.push_back(entry.clone());
            while area.bytes > self.max_bytes_per_tenant && area.entries.len() > 1 {
                if let Some(old) = area.entries.pop_front() {
                    area.bytes -= old.bytes;
                    area.evicted_items += old.items;
                    evict.push((tenant.to_string(), old));
                }
            }
            // Over the total: the oldest entry of any tenant goes first,
            // never the one just stored.
            let mut total: u64 = areas.values().map(|a| a.bytes).sum();
            while total > self.max_bytes_total {
                let oldest = areas
                    .iter()
                    .filter_map(|(t, a)| a.entries.front().map(|e| (e.id, t.clone())))
                    .filter(|(id, _)| *id != entry.id)
                    .min();
                let Some((_, owner)) = oldest else {
                    break;
                };
                let Some(area) = areas.get_mut(&owner) else {
                    break;
                };
                if let Some(old) = area.entries.pop_front() {
                    area.bytes -= old.bytes;
                    area.evicted_items += old.items;
                    total -= old.bytes;
                    evict.push((owner, old));
                }
            }
        }
        for (tenant, old) in evict {
            tracing::error!(tenant = %tenant, items = old.items, kind = %old.kind, "dead-letter budget exceeded; oldest refused payload evicted");
            let _ = std::fs::remove_file(self.path(&tenant, &old));
        }
        Ok(entry)
    }

    /// The tenant's entries, oldest first.
    pub(crate) fn list(&self, tenant: &str) -> Vec<Entry> {
        self.areas
            .lock()
            .get(tenant)
            .map(|a| a.entries.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The items of one entry.
    pub(crate) fn items(&self, tenant: &str, id: u64) -> Option<Vec<String>> {
        let entry = self
            .areas
            .lock()
            .get(tenant)?
            .entries
            .iter()
            .find(|e| e.id == id)
            .cloned()?;
        let f = std::fs::File::open(self.path(tenant, &entry)).ok()?;
        Some(
            BufReader::new(f)
                .lines()
                .skip(1)
                .map_while(Result::ok)
                .collect(),
        )
    }

    pub(crate) fn totals(&self, tenant: &str) -> Totals {
        self.areas
            .lock()
            .get(tenant)
            .map(|a| Totals {
                entries: a.entries.len() as u64,
                items: a.entries.iter().map(|e| e.items).sum(),
                bytes: a.bytes,
                evicted_items: a.evicted_items,
            })
            .unwrap_or_default()
    }

    /// Bytes held in every tenant's area.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.areas.lock().values().map(|a| a.bytes).sum()
    }

    /// Deletes a tenant's area (disconnect).
    pub(crate) fn purge(&self, tenant: &str) {
        self.areas.lock().remove(tenant);
        let _ = std::fs::remove_dir_all(self.dir.join(tenant));
    }
}

fn read_meta(path: &Path) -> Option<Entry> {
    let f = std::fs::File::open(path).ok()?;
    let mut line = String::new();
    BufReader::new(f).read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tenant's area together stays within the total: the oldest
    /// entry of any tenant is evicted first (before, each tenant had its
    /// own bound and nothing bounded 10,000 of them together).
    #[test]
    fn all_areas_together_stay_within_the_total() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetters::open(dir.path(), 1 << 20, 100).unwrap();
        let item = [b'x'; 29];
        for (i, tenant) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            dl.put(tenant, "logs", 400, "bad", &[&item], i as i64)
                .unwrap();
        }
        assert!(dl.total_bytes() <= 100, "{}", dl.total_bytes());
        assert_eq!(dl.total_bytes(), 90, "three entries of 30 bytes");
        assert!(dl.list("a").is_empty() && dl.list("b").is_empty());
        assert_eq!(dl.totals("a").evicted_items, 1);
        assert_eq!(dl.list("e").len(), 1, "the newest stays");
        let again = DeadLetters::open(dir.path(), 1 << 20, 100).unwrap();
        assert_eq!(again.total_bytes(), 90, "evicted files are gone");
    }

    #[test]
    fn stores_lists_bounds_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetters::open(dir.path(), 100, 1 << 20).unwrap();
        let a = dl
            .put(
                "acme",
                "logs",
                400,
                "bad",
                &[b"{\"message\":\"a\"}", b"{\"message\":\"b\"}"],
                1,
            )
            .unwrap();
        assert_eq!(
            dl.items("acme", a.id).unwrap(),
            vec!["{\"message\":\"a\"}", "{\"message\":\"b\"}"]
        );
        assert_eq!(dl.totals("acme").items, 2);
        // Over budget: the oldest entry is evicted and counted.
        let big = vec![b'x'; 90];
        dl.put("acme", "logs", 400, "bad", &[&big], 2).unwrap();
        let t = dl.totals("acme");
        assert_eq!((t.entries, t.evicted_items), (1, 2));
        drop(dl);
        let dl = DeadLetters::open(dir.path(), 100, 1 << 20).unwrap();
        assert_eq!(dl.list("acme").len(), 1);
        assert_eq!(dl.list("other").len(), 0);
        dl.purge("acme");
        assert_eq!(dl.totals("acme"), Totals::default());
    }
}
