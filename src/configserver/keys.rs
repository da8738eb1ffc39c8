//! Which depot is calling: the registered depots' host keys (and, with
//! mTLS, the depot id their client certificate names), the interceptor that
//! admits a depot and names it on the request, and a bound on the calls one
//! depot may have in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Request, Status};
use tracing::{info, warn};

use super::store::DepotRecord;
use crate::auth::{bearer_token, keys_equal, unauthenticated};
use crate::domain::{Secret, ValidationError};
use crate::status::{Problem, RETRY_BUSY, Reason};
use crate::transport::tls::cert_names;
use crate::transport::{ClientAuth, ConnInfo, RateLimited};

/// Calls one depot may have in flight unless its pushes need more (see
/// [`DepotKeys::new`]); more are refused with RESOURCE_EXHAUSTED.
pub const DEFAULT_MAX_DEPOT_CALLS: usize = 256;

/// The depot a ConfigServer call was authenticated as; it holds one of the
/// depot's in-flight slots while the handler keeps it.
#[derive(Debug, Clone)]
pub struct CallerDepot {
    id: String,
    _slot: Option<Arc<OwnedSemaphorePermit>>,
}

impl CallerDepot {
    /// A caller named `id`, holding no slot (handler tests).
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            _slot: None,
        }
    }

    /// The depot that made `request` (set by [`DepotKeys::interceptor`]).
    pub fn of<T>(request: &Request<T>) -> Result<CallerDepot, Status> {
        request
            .extensions()
            .get::<CallerDepot>()
            .cloned()
            .ok_or_else(|| crate::auth::refused("no depot identity"))
    }

    /// The depot's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl std::fmt::Display for CallerDepot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id)
    }
}

#[derive(Default)]
struct Known {
    keys: Vec<(String, Secret)>,
    slots: HashMap<String, Arc<Semaphore>>,
}

/// Depot host keys, to tell which depot is calling.
#[derive(Clone)]
pub struct DepotKeys {
    known: Arc<RwLock<Known>>,
    max_calls: usize,
    log: Arc<RateLimited>,
    /// The Admin service's key: never a depot's (a depot host holding it
    /// could administer the configserver).
    admin: Option<Secret>,
    /// Counts [`DepotKeys::set`]s, so that [`DepotKeys::follow`] with
    /// records read before one never undoes it.
    generation: Arc<AtomicU64>,
}

impl Default for DepotKeys {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_DEPOT_CALLS)
    }
}

impl DepotKeys {
    /// No depots yet; each may have `max_calls` calls in flight.
    pub fn new(max_calls: usize) -> Self {
        Self {
            known: Arc::default(),
            max_calls: max_calls.max(1),
            log: Arc::new(RateLimited::default()),
            admin: None,
            generation: Arc::default(),
        }
    }

    /// The Admin service's key, which no depot may have.
    pub fn with_admin_key(mut self, key: Option<Secret>) -> Self {
        self.admin = key.filter(|k| !k.is_empty());
        self
    }

    /// Whether `key` is the Admin service's.
    fn is_admin(&self, key: &Secret) -> bool {
        self.admin
            .as_ref()
            .is_some_and(|admin| keys_equal(key.expose(), admin.expose()))
    }

    /// Refuses depots (of request section `section`) whose host key is the
    /// Admin key; the key itself is never named.
    pub fn refuse_admin_key(
        &self,
        depots: &[DepotRecord],
        section: &str,
    ) -> Result<(), ValidationError> {
        match depots.iter().position(|d| self.is_admin(&d.host_key)) {
            Some(i) => Err(ValidationError::new(
                format!("{section}[{i}].host_key"),
                "is the Admin key; give the depot a key of its own",
            )),
            None => Ok(()),
        }
    }

    /// Replaces the known keys (a depot keeps its in-flight slots). A
    /// depot stored with the Admin key (written before the check, or through
    /// another configserver on the same database) authenticates with no key.
    pub fn set(&self, keys: Vec<(String, Secret)>) {
        let keys = self.usable(keys, true);
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        Self::replace_in(&mut known, keys, self.max_calls);
        // Under the lock: a `follow` holding it next sees the new count.
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Which [`DepotKeys::set`] the keys are at: taken before reading the
    /// records handed to [`DepotKeys::follow`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// [`set`](Self::set) from the depots' records, if their keys differ
    /// from the known ones: another configserver on the same database may
    /// have changed them (a replica reads the records every second).
    /// Records read before this replica's own latest `set` (generation
    /// `read_at` is older) are older than what it knows: they are ignored,
    /// so a rotated-out key never comes back.
    pub fn follow(&self, depots: &[DepotRecord], read_at: u64) {
        if self.generation() != read_at {
            return;
        }
        let keys = depots
            .iter()
            .map(|d| (d.id.to_string(), d.host_key.clone()))
            .collect();
        let keys = self.usable(keys, false);
        let same = {
            let known = self.known.read().unwrap_or_else(|p| p.into_inner());
            known.keys.len() == keys.len()
                && known
                    .keys
                    .iter()
                    .zip(&keys)
                    .all(|((a, ka), (b, kb))| a == b && ka.expose() == kb.expose())
        };
        if !same {
            info!(
                depots = keys.len(),
                "depot keys changed in the database; reloaded"
            );
            let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
            // A `set` between the check above and now wins.
            if self.generation() == read_at {
                Self::replace_in(&mut known, keys, self.max_calls);
            }
        }
    }

    /// `keys` with the Admin key blanked (warned about when `warn`).
    fn usable(&self, keys: Vec<(String, Secret)>, warn: bool) -> Vec<(String, Secret)> {
        keys.into_iter()
            .map(|(id, key)| {
                if self.is_admin(&key) {
                    if warn {
                        warn!(depot = %id, "the depot's host key is the Admin key: refused for depot calls until it has one of its own");
                    }
                    (id, Secret::new(String::new()))
                } else {
                    (id, key)
                }
            })
            .collect()
    }

    /// `known` with `keys` (a depot keeps its in-flight slots).
    fn replace_in(known: &mut Known, keys: Vec<(String, Secret)>, max_calls: usize) {
        let mut slots = std::mem::take(&mut known.slots);
        known.slots = keys
            .iter()
            .map(|(id, _)| {
                let slot = slots
                    .remove(id)
                    .unwrap_or_else(|| Arc::new(Semaphore::new(max_calls)));
                (id.clone(), slot)
            })
            .collect();
        known.keys = keys;
    }

    /// The depot whose key `token` is. Every key is compared, in constant
    /// time each, so timing tells nothing about which one almost matched.
    fn depot_for(&self, token: &str) -> Option<String> {
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        let mut found = None;
        for (id, key) in known.keys.iter() {
            if !key.is_empty() && keys_equal(token, key.expose()) {
                found = Some(id.clone());
            }
        }
        found
    }

    /// The one registered depot a client certificate names.
    fn depot_named_by(&self, info: Option<&ConnInfo>) -> Result<String, Status> {
        let cert = info.and_then(ConnInfo::peer_cert).ok_or_else(|| {
            crate::auth::refused("a client certificate from the client CA is required (mTLS)")
        })?;
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        let mut named = known.keys.iter().filter(|(id, _)| cert_names(cert, id));
        match (named.next(), named.next()) {
            (Some((id, _)), None) => Ok(id.clone()),
            (None, _) => Err(crate::auth::refused(
                "the client certificate names no registered depot",
            )),
            (Some(_), Some(_)) => Err(crate::auth::refused(
                "the client certificate names more than one depot",
            )),
        }
    }

    /// Who is calling, by `mode`.
    fn identify(&self, request: &Request<()>, mode: ClientAuth) -> Result<String, Status> {
        let info = ConnInfo::of(request);
        if !mode.needs_key() {
            return self.depot_named_by(info);
        }
        let token = bearer_token(request).ok_or_else(|| unauthenticated(true))?;
        // Keys are unique to depots: an unknown one is most often a depot
        // not registered yet, or one whose key was changed on one side.
        let depot = self.depot_for(token).ok_or_else(|| {
            crate::auth::refused("no registered depot has this host key (register the depot with its key, or check its key file)")
        })?;
        if mode.needs_cert() {
            let cert = info.and_then(ConnInfo::peer_cert).ok_or_else(|| {
                crate::auth::refused("a client certificate from the client CA is required (mTLS)")
            })?;
            // The key and the certificate do not belong together: the
            // caller's credentials failed, as with a wrong key (a depot
            // retries its reports; a refusal of what it asked for would
            // make it drop them).
            if !cert_names(cert, &depot) {
                return Err(crate::auth::refused(
                    "the client certificate does not name the depot this key belongs to",
                ));
            }
        }
        Ok(depot)
    }

    /// One of `depot`'s in-flight slots, if it has one free.
    fn slot(&self, depot: &str) -> Result<Option<Arc<OwnedSemaphorePermit>>, Status> {
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        let Some(slots) = known.slots.get(depot) else {
            return Ok(None);
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => Ok(Some(Arc::new(permit))),
            Err(_) => Err(Problem::new(
                Reason::TooManyRequests,
                format!(
                    "too many calls in flight from this depot (at most {})",
                    self.max_calls
                ),
            )
            .retry_after(RETRY_BUSY)
            .into_status()),
        }
    }

    /// A server interceptor admitting registered depots, identified as
    /// `mode` says; a refusal is logged (at most one line per interval).
    pub fn interceptor(
        &self,
        mode: ClientAuth,
    ) -> impl tonic::service::Interceptor + Clone + use<> {
        let keys = self.clone();
        move |mut request: Request<()>| -> Result<Request<()>, Status> {
            let admitted = keys.identify(&request, mode).and_then(|depot| {
                let slot = keys.slot(&depot)?;
                Ok(CallerDepot {
                    id: depot,
                    _slot: slot,
                })
            });
            match admitted {
                Ok(caller) => {
                    if let Some(info) = ConnInfo::of(&request) {
                        info.authenticated();
                    }
                    request.extensions_mut().insert(caller);
                    Ok(request)
                }
                Err(status) => {
                    if let Some(held) = keys.log.allow() {
                        let peer = ConnInfo::of(&request).and_then(|i| i.remote_addr);
                        warn!(
                            ?peer,
                            code = crate::status::code_name(status.code()),
                            reason = status.message(),
                            held_back = held,
                            "depot call refused"
                        );
                    }
                    Err(status)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor;

    use super::*;

    fn with_token(token: &str) -> Request<()> {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }

    #[test]
    fn a_depot_is_known_by_its_key_only() {
        let keys = DepotKeys::default();
        keys.set(vec![
            ("d1.example.org".into(), Secret::new("k1")),
            ("d2.example.org".into(), Secret::new("")),
        ]);
        let mut admit = keys.interceptor(ClientAuth::Key);
        let request = admit.call(with_token("k1")).unwrap();
        assert_eq!(CallerDepot::of(&request).unwrap().id(), "d1.example.org");
        // An empty key admits nobody, not even an empty token.
        for token in ["", "k2"] {
            let refused = admit.call(with_token(token)).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        }
        assert!(CallerDepot::of(&Request::new(())).is_err());
        // Without a TLS connection there is no certificate to name a depot.
        let refused = keys
            .interceptor(ClientAuth::Both)
            .call(with_token("k1"))
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            crate::status::reason_of(&refused).as_deref(),
            Some("UNAUTHENTICATED")
        );
    }

    /// A registered depot `id` with host key `key`.
    fn record(id: &str, key: &str) -> DepotRecord {
        DepotRecord {
            id: crate::domain::Fqdn::parse(id, "id").unwrap(),
            endpoint: crate::domain::Endpoint::parse("http://127.0.0.1:9", "e").unwrap(),
            host_key: Secret::new(key),
            description: String::new(),
        }
    }

    #[test]
    fn the_admin_key_is_never_a_depots() {
        let keys = DepotKeys::default().with_admin_key(Some(Secret::new("admin-key")));
        keys.set(vec![
            ("d1.example.org".into(), Secret::new("admin-key")),
            ("d2.example.org".into(), Secret::new("k2")),
        ]);
        let mut admit = keys.interceptor(ClientAuth::Key);
        let refused = admit.call(with_token("admin-key")).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(admit.call(with_token("k2")).is_ok());
        let depot = |key: &str| record("d3.example.org", key);
        let err = keys
            .refuse_admin_key(&[depot("k3"), depot("admin-key")], "depots")
            .unwrap_err();
        let (field, message) = err.violations().next().unwrap();
        assert_eq!(field, "depots[1].host_key");
        assert!(!message.contains("admin-key"), "{message}");
        assert!(keys.refuse_admin_key(&[depot("k3")], "depots").is_ok());
        // Without an Admin key there is nothing to refuse.
        assert!(
            DepotKeys::default()
                .refuse_admin_key(&[depot("admin-key")], "depots")
                .is_ok()
        );
    }

    #[test]
    fn records_read_before_a_set_never_undo_it() {
        let keys = DepotKeys::default();
        let depot = |key: &str| record("d1.example.org", key);
        keys.set(vec![("d1.example.org".into(), Secret::new("old"))]);
        // A renewal starts and reads the records (the old key) ...
        let read_at = keys.generation();
        let read = [depot("old")];
        // ... while an Admin write on this replica rotates the key.
        keys.set(vec![("d1.example.org".into(), Secret::new("new"))]);
        keys.follow(&read, read_at);
        let mut admit = keys.interceptor(ClientAuth::Key);
        assert!(admit.call(with_token("new")).is_ok());
        assert!(admit.call(with_token("old")).is_err());
        // Records read after it are followed (another replica's change).
        keys.follow(&[depot("newer")], keys.generation());
        assert!(admit.call(with_token("newer")).is_ok());
        assert!(admit.call(with_token("new")).is_err());
    }

    #[test]
    fn a_depot_has_a_bounded_number_of_calls_in_flight() {
        let keys = DepotKeys::new(2);
        keys.set(vec![("d1.example.org".into(), Secret::new("k1"))]);
        let mut admit = keys.interceptor(ClientAuth::Key);
        let first = admit.call(with_token("k1")).unwrap();
        let second = admit.call(with_token("k1")).unwrap();
        let refused = admit.call(with_token("k1")).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        use tonic_types::StatusExt;
        assert_eq!(
            crate::status::reason_of(&refused).as_deref(),
            Some("TOO_MANY_REQUESTS")
        );
        assert_eq!(
            refused.get_details_retry_info().and_then(|r| r.retry_delay),
            Some(RETRY_BUSY)
        );
        // Re-registering keeps the slots taken.
        keys.set(vec![("d1.example.org".into(), Secret::new("k1"))]);
        assert!(admit.call(with_token("k1")).is_err());
        drop((first, second));
        assert!(admit.call(with_token("k1")).is_ok());
    }
}
