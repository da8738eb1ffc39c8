//! Which depot is calling: the registered depots' host keys, and the
//! interceptor that admits a depot by its key and names it on the request.

use std::sync::{Arc, RwLock};

use tonic::{Request, Status};

use crate::auth::{bearer_token, keys_equal, unauthenticated};
use crate::domain::Secret;

/// The depot a ConfigServer call was authenticated as.
#[derive(Debug, Clone)]
pub struct CallerDepot(pub String);

impl CallerDepot {
    /// The depot that made `request` (set by [`DepotKeys::interceptor`]).
    pub fn of<T>(request: &Request<T>) -> Result<String, Status> {
        request
            .extensions()
            .get::<CallerDepot>()
            .map(|c| c.0.clone())
            .ok_or_else(|| Status::unauthenticated("no depot identity"))
    }
}

/// Depot host keys, to tell which depot is calling.
#[derive(Clone, Default)]
pub struct DepotKeys(Arc<RwLock<Vec<(String, Secret)>>>);

impl DepotKeys {
    /// Replaces the known keys.
    pub fn set(&self, keys: Vec<(String, Secret)>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = keys;
    }

    /// The depot whose key `token` is. Every key is compared, in constant
    /// time each, so timing tells nothing about which one almost matched.
    fn depot_for(&self, token: &str) -> Option<String> {
        let keys = self.0.read().unwrap_or_else(|p| p.into_inner());
        let mut found = None;
        for (id, key) in keys.iter() {
            if !key.is_empty() && keys_equal(token, key.expose()) {
                found = Some(id.clone());
            }
        }
        found
    }

    /// A server interceptor admitting registered depots.
    pub fn interceptor(&self) -> impl tonic::service::Interceptor + Clone + use<> {
        let keys = self.clone();
        move |mut request: Request<()>| -> Result<Request<()>, Status> {
            let token = bearer_token(&request).ok_or_else(|| unauthenticated(true))?;
            let depot = keys
                .depot_for(token)
                .ok_or_else(|| unauthenticated(false))?;
            request.extensions_mut().insert(CallerDepot(depot));
            Ok(request)
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
        let mut admit = keys.interceptor();
        let request = admit.call(with_token("k1")).unwrap();
        assert_eq!(CallerDepot::of(&request).unwrap(), "d1.example.org");
        // An empty key admits nobody, not even an empty token.
        for token in ["", "k2"] {
            let refused = admit.call(with_token(token)).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        }
        assert!(CallerDepot::of(&Request::new(())).is_err());
    }
}
