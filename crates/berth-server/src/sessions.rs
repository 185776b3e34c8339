//! The dashboard's signed-in sessions: each a random id (the cookie) with
//! its own CSRF token, lasting [`LIFETIME`], kept in memory (a restart
//! signs everyone out).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a session lasts.
pub(crate) const LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// The most sessions kept at once; the oldest go first.
const MAX_SESSIONS: usize = 256;

/// The sessions that are signed in.
#[derive(Default)]
pub(crate) struct Sessions {
    open: Mutex<HashMap<String, Session>>,
}

/// One signed-in browser.
#[derive(Clone)]
pub(crate) struct Session {
    /// The token its forms carry.
    pub(crate) csrf: String,
    expires: Instant,
}

impl Sessions {
    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new session: its id (the cookie) and its CSRF token.
    pub(crate) fn start(&self) -> (String, Session) {
        let id = random_token();
        let session = Session {
            csrf: random_token(),
            expires: Instant::now() + LIFETIME,
        };
        let mut open = self.open();
        let now = Instant::now();
        open.retain(|_, session| session.expires > now);
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open
                .iter()
                .min_by_key(|(_, session)| session.expires)
                .map(|(id, _)| id.clone())
        {
            open.remove(&oldest);
        }
        open.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The live session of cookie `id`.
    pub(crate) fn get(&self, id: &str) -> Option<Session> {
        let open = self.open();
        open.get(id)
            .filter(|session| session.expires > Instant::now())
            .cloned()
    }

    pub(crate) fn end(&self, id: &str) {
        self.open().remove(id);
    }
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}
