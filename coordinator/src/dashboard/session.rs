//! Dashboard sessions: a sign-in gets a random id (256 bits) that maps, in this coordinator's
//! memory, to the identity's name with the `read` role only. The cookie never holds the API
//! token, so a stolen cookie reads for at most its lifetime and never deploys; sign-out ends
//! it. Sessions live in one coordinator: behind several, sign in on each (or pin sessions).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ring::rand::SecureRandom as _;

use crate::identity::{Identity, Role};

/// How long a session lasts.
pub(crate) const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The most sessions kept at once; expired ones are dropped first.
const MAX_SESSIONS: usize = 10_000;

/// The live sessions, by id.
#[derive(Clone, Default)]
pub(crate) struct Sessions(Arc<Mutex<HashMap<String, (String, Instant)>>>);

impl Sessions {
    /// A new session for the identity `name`: its id, or `None` when the system's random
    /// source failed or too many sessions are open.
    pub(crate) fn open(&self, name: &str) -> Option<String> {
        let mut bytes = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut sessions = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, (_, until)| *until > now);
        }
        if sessions.len() >= MAX_SESSIONS {
            return None;
        }
        sessions.insert(id.clone(), (name.to_owned(), now + LIFETIME));
        Some(id)
    }

    /// The read-only identity of a live session.
    pub(crate) fn identity(&self, id: &str) -> Option<Identity> {
        let sessions = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (name, until) = sessions.get(id)?;
        (*until > Instant::now()).then(|| Identity {
            name: name.clone(),
            roles: vec![Role::Read],
        })
    }

    /// Ends a session.
    pub(crate) fn close(&self, id: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_session_reads_only_until_it_is_closed() {
        let sessions = Sessions::default();
        let id = sessions.open("release-bot").unwrap();
        assert_eq!(id.len(), 64);
        let who = sessions.identity(&id).unwrap();
        assert_eq!(who.name, "release-bot");
        assert!(!who.may_deploy_somewhere());
        assert_ne!(sessions.open("release-bot").unwrap(), id, "ids are random");
        sessions.close(&id);
        assert!(sessions.identity(&id).is_none());
        assert!(sessions.identity("not-a-session").is_none());
    }
}
