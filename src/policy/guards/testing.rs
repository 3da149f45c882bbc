//! Hand-built exchanges and services for the guards' unit tests.

use http::{HeaderMap, Method};
use std::net::{IpAddr, SocketAddr};

use crate::policy::{Exchange, Services};
use crate::state::State;

/// A bodiless `POST /hook` from `ip` (the socket peer too).
pub(crate) fn exchange(ip: &str) -> Exchange {
    let ip: IpAddr = ip.parse().expect("test address");
    Exchange::new(
        Method::POST,
        "/hook",
        None,
        HeaderMap::new(),
        SocketAddr::new(ip, 40000),
    )
}

/// Services around `state`, with no issued keys and a fixed token key.
pub(crate) fn services(state: State) -> Services {
    Services {
        state,
        keys: crate::store::keys::KeyCache::empty(),
        tokens: crate::browser::token::TokenKey::from_secret(b"0123456789abcdef0123456789abcdef")
            .expect("a 32-byte secret is a valid token key"),
    }
}
