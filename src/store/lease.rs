//! Slot leases: which daemon runs a job's scheduled slot. A lease is an immutable object under
//! `<curated>/_leases/<job>/<slot>/`, created with put-if-absent (`PutMode::Create`), so of any
//! number of daemons claiming the same lease exactly one succeeds. Its number is the fencing token:
//! the slot's first holder has token 1, and a daemon may take an expired lease over only by
//! creating the next token, which again exactly one daemon can. A holder checks before it publishes
//! that its lease is unexpired and that no later token exists; a `done` marker ends the slot.
//!
//! Leases are never renewed: a lease lasts the job's timeout plus a margin, and a run is abandoned
//! at its timeout. Expiry compares the daemons' wall clocks, which are assumed to agree to well
//! within that margin (NTP).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, Result};
use crate::store::Stores;

/// Folder of the leases under the curated root.
pub const LEASES_DIR: &str = "_leases";
const DONE_FILE: &str = "done.json";
/// A slot's folder name: its UTC instant.
const SLOT_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// A daemon's claim on one job's slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub job: String,
    /// The cron instant this run is for.
    pub slot: DateTime<Utc>,
    /// The fencing token: 1 for the slot's first holder, one more for each takeover.
    pub token: u64,
    pub daemon_id: String,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// How a slot ended: written once, by the holder that finished it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    pub token: u64,
    pub daemon_id: String,
    pub finished_at: DateTime<Utc>,
    /// `succeeded`, or why the slot needs no run (`superseded`, ...).
    pub outcome: String,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This daemon holds the slot until the lease expires.
    Acquired(Lease),
    /// Another daemon's lease is live.
    Held(Lease),
    /// The slot is finished.
    Done(Done),
}

/// What the store holds for one slot.
#[derive(Debug, Default)]
struct SlotState {
    newest: Option<Lease>,
    done: Option<Done>,
}

/// The lease folder of a curated store.
#[derive(Debug, Clone)]
pub struct Leases {
    store: Arc<dyn ObjectStore>,
    root: StorePath,
    location: String,
}

impl Leases {
    /// The leases under `curated_root`.
    pub fn new(stores: &Stores, curated_root: &Url) -> Result<Leases> {
        let (store, path) = stores.store_for(curated_root)?;
        Ok(Leases {
            store,
            root: path.clone().join(LEASES_DIR),
            location: format!("{curated_root}{LEASES_DIR}/"),
        })
    }

    fn slot_dir(&self, job: &str, slot: DateTime<Utc>) -> StorePath {
        self.root
            .clone()
            .join(job)
            .join(slot.format(SLOT_FORMAT).to_string())
    }

    fn lease_path(&self, job: &str, slot: DateTime<Utc>, token: u64) -> StorePath {
        self.slot_dir(job, slot)
            .join(format!("lease-{token:020}.json"))
    }

    fn fail(&self, what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Storage {
            location: self.location.clone(),
            message: format!("{what}: {e}"),
            source: Some(Box::new(e)),
        }
    }

    /// Claim `job`'s `slot` for `daemon_id` until `now + ttl`: a new lease when the slot has none
    /// or its newest one expired, else who holds it or how it ended.
    pub async fn claim(
        &self,
        job: &str,
        slot: DateTime<Utc>,
        daemon_id: &str,
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    ) -> Result<Claim> {
        let state = self.state(job, slot).await?;
        if let Some(done) = state.done {
            return Ok(Claim::Done(done));
        }
        let token = match state.newest {
            Some(held) if now < held.expires_at => return Ok(Claim::Held(held)),
            Some(expired) => expired.token + 1,
            None => 1,
        };
        let lease = Lease {
            job: job.to_string(),
            slot,
            token,
            daemon_id: daemon_id.to_string(),
            acquired_at: now,
            expires_at: now + ttl,
        };
        let path = self.lease_path(job, slot, token);
        match self.create(&path, &lease).await? {
            true => Ok(Claim::Acquired(lease)),
            // Another daemon created this token first: it holds the slot.
            false => Ok(Claim::Held(self.read(&path).await?)),
        }
    }

    /// The fence a holder passes before it publishes: its lease has not expired at `now`, no
    /// later token exists and the slot is not finished. Otherwise `Error::LeaseLost`.
    pub async fn check(&self, lease: &Lease, now: DateTime<Utc>) -> Result<()> {
        let lost = |message: String| Error::LeaseLost {
            job: lease.job.clone(),
            slot: lease.slot,
            token: lease.token,
            message,
        };
        if now >= lease.expires_at {
            return Err(lost(format!(
                "lease expired at {}",
                lease.expires_at.to_rfc3339()
            )));
        }
        let state = self.state(&lease.job, lease.slot).await?;
        if let Some(done) = state.done {
            return Err(lost(format!(
                "the slot was finished by token {} ({})",
                done.token, done.outcome
            )));
        }
        match state.newest {
            Some(newest) if newest.token > lease.token => Err(lost(format!(
                "daemon `{}` took the slot over with token {}",
                newest.daemon_id, newest.token
            ))),
            _ => Ok(()),
        }
    }

    /// Mark the slot finished by `lease`'s holder. Finishing twice keeps the first marker.
    pub async fn finish(&self, lease: &Lease, outcome: &str, now: DateTime<Utc>) -> Result<Done> {
        let done = Done {
            token: lease.token,
            daemon_id: lease.daemon_id.clone(),
            finished_at: now,
            outcome: outcome.to_string(),
        };
        let path = self.slot_dir(&lease.job, lease.slot).join(DONE_FILE);
        match self.create(&path, &done).await? {
            true => Ok(done),
            false => self.read(&path).await,
        }
    }

    /// The slots of `job` any daemon ever claimed, oldest first.
    pub async fn claimed_slots(&self, job: &str) -> Result<Vec<DateTime<Utc>>> {
        let dir = self.root.clone().join(job);
        let listed = match self.store.list_with_delimiter(Some(&dir)).await {
            Ok(l) => l.common_prefixes,
            Err(object_store::Error::NotFound { .. }) => vec![],
            Err(e) => return Err(self.fail("cannot list slots", e)),
        };
        let mut slots: Vec<DateTime<Utc>> = listed
            .iter()
            .filter_map(|p| p.filename())
            .filter_map(|f| chrono::NaiveDateTime::parse_from_str(f, SLOT_FORMAT).ok())
            .map(|t| t.and_utc())
            .collect();
        slots.sort();
        Ok(slots)
    }

    /// Whether the slot has a `done` marker.
    pub async fn is_done(&self, job: &str, slot: DateTime<Utc>) -> Result<bool> {
        Ok(self.state(job, slot).await?.done.is_some())
    }

    /// The slot's newest lease and its done marker, from one listing.
    async fn state(&self, job: &str, slot: DateTime<Utc>) -> Result<SlotState> {
        let dir = self.slot_dir(job, slot);
        let listed: Vec<object_store::ObjectMeta> =
            match self.store.list(Some(&dir)).try_collect().await {
                Ok(v) => v,
                Err(object_store::Error::NotFound { .. }) => vec![],
                Err(e) => return Err(self.fail("cannot list leases", e)),
            };
        let mut state = SlotState::default();
        let newest = listed
            .iter()
            .filter(|m| {
                m.location
                    .filename()
                    .is_some_and(|f| f.starts_with("lease-"))
            })
            .max_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
        if let Some(meta) = newest {
            state.newest = Some(self.read(&meta.location).await?);
        }
        if listed
            .iter()
            .any(|m| m.location.filename() == Some(DONE_FILE))
        {
            state.done = Some(self.read(&dir.join(DONE_FILE)).await?);
        }
        Ok(state)
    }

    /// Create `path` holding `value` if nothing is there: `false` when something already was.
    async fn create<T: Serialize>(&self, path: &StorePath, value: &T) -> Result<bool> {
        let bytes = serde_json::to_vec(value).map_err(|e| self.fail("cannot encode lease", e))?;
        let opts = PutOptions::from(PutMode::Create);
        match self
            .store
            .put_opts(path, PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.fail(&format!("cannot create {path}"), e)),
        }
    }

    async fn read<T: for<'de> Deserialize<'de>>(&self, path: &StorePath) -> Result<T> {
        let got = self
            .store
            .get(path)
            .await
            .map_err(|e| self.fail(&format!("cannot read {path}"), e))?;
        let bytes = got
            .bytes()
            .await
            .map_err(|e| self.fail(&format!("cannot read {path}"), e))?;
        serde_json::from_slice(&bytes).map_err(|e| self.fail(&format!("{path} is not a lease"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn memory_leases() -> Leases {
        let stores = Stores::default();
        let root = Url::parse("memory:///curated/").unwrap();
        stores.inject(&root, Arc::new(InMemory::new()));
        Leases::new(&stores, &root).unwrap()
    }

    const SLOT: &str = "2026-12-03T06:00:00Z";

    #[tokio::test]
    async fn a_live_lease_is_held_an_expired_one_taken_over_with_the_next_token() {
        let leases = memory_leases();
        let ttl = chrono::Duration::minutes(10);
        let slot = at(SLOT);
        let t0 = at("2026-12-03T06:00:01Z");
        let Claim::Acquired(first) = leases.claim("a", slot, "d1", t0, ttl).await.unwrap() else {
            panic!("first claim must win")
        };
        assert_eq!(
            (first.token, first.expires_at),
            (1, at("2026-12-03T06:10:01Z"))
        );
        // Before expiry a second daemon sees the holder.
        let t1 = at("2026-12-03T06:05:00Z");
        assert_eq!(
            leases.claim("a", slot, "d2", t1, ttl).await.unwrap(),
            Claim::Held(first.clone())
        );
        leases.check(&first, t1).await.unwrap();
        // After expiry d2 takes it over with token 2; d1's fence now fails.
        let t2 = at("2026-12-03T06:10:01Z");
        let Claim::Acquired(second) = leases.claim("a", slot, "d2", t2, ttl).await.unwrap() else {
            panic!("expired lease must be taken over")
        };
        assert_eq!((second.token, second.daemon_id.as_str()), (2, "d2"));
        let e = leases.check(&first, t1).await.unwrap_err().to_string();
        assert_eq!(
            e,
            "job `a` slot 2026-12-03T06:00:00+00:00: lease token 1 lost: daemon `d2` took the slot over with token 2"
        );
        let e = leases
            .check(&second, at("2026-12-03T06:20:01Z"))
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .ends_with("lease expired at 2026-12-03T06:20:01+00:00"),
            "{e}"
        );
        // Done ends the slot for everyone, and the first marker stays.
        let done = leases.finish(&second, "succeeded", t2).await.unwrap();
        assert_eq!(
            leases
                .claim("a", slot, "d3", at("2026-12-04T00:00:00Z"), ttl)
                .await
                .unwrap(),
            Claim::Done(done.clone())
        );
        assert_eq!(leases.finish(&first, "succeeded", t2).await.unwrap(), done);
        assert!(leases.is_done("a", slot).await.unwrap());
        assert_eq!(leases.claimed_slots("a").await.unwrap(), vec![slot]);
        assert_eq!(
            leases.claimed_slots("zzz").await.unwrap(),
            Vec::<DateTime<Utc>>::new()
        );
        // Other jobs and slots are independent.
        assert!(matches!(
            leases.claim("b", slot, "d3", t1, ttl).await.unwrap(),
            Claim::Acquired(Lease { token: 1, .. })
        ));
    }
}
