//! `[admin]`: the admin listener (admin API, `/metrics`, dashboard) and its Bearer token.

use std::net::SocketAddr;

use super::reader::Section;
use super::server::ServerConfig;
use crate::secret::Secret;

/// `[admin]`. Without the section there is no admin listener at all.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Address of the admin listener. Default `127.0.0.1:9900`.
    pub listen: SocketAddr,
    /// Bearer token for everything on the admin listener but `/healthz` and the dashboard's
    /// static files.
    pub token: Secret,
}

/// The shortest admin token accepted: anything shorter can be guessed online.
pub const MIN_TOKEN_LEN: usize = 16;

/// The default admin address: loopback only.
pub const DEFAULT_ADMIN_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 9900);

pub(super) fn read_admin(s: Section<'_, '_>, server: &ServerConfig) -> Option<AdminConfig> {
    let mut listen = SocketAddr::from(DEFAULT_ADMIN_LISTEN);
    if let Some(text) = s.string("listen") {
        match text.parse::<SocketAddr>() {
            Ok(a) => listen = a,
            Err(_) => s.error(
                "listen",
                format!("\"{text}\" is not an address and port"),
                "write e.g. \"127.0.0.1:9900\"",
            ),
        }
    }
    let token = match s.secret("token") {
        Some(t) if s.refuse_padded("token", None, &t) => None,
        Some(t) if t.expose().chars().count() < MIN_TOKEN_LEN => {
            s.error(
                "token",
                format!("is shorter than {MIN_TOKEN_LEN} characters, too easy to guess"),
                "use 32 or more random characters, e.g. the output of `openssl rand -base64 32`",
            );
            None
        }
        Some(t) => Some(t),
        // Present but unusable (a variable not set, a wrong type): said already.
        None if s.has("token") => None,
        None => {
            s.error(
                "token",
                "is required: the admin API is never served without a token",
                "set token = \"${HOOKWARDEN_ADMIN_TOKEN}\" and export a long random value",
            );
            None
        }
    };
    if listen.port() != 0
        && listen.port() == server.listen.port()
        && (listen.ip() == server.listen.ip()
            || listen.ip().is_unspecified()
            || server.listen.ip().is_unspecified())
    {
        s.error(
            "listen",
            "is the public listener's address; the admin API must never be served on the public port",
            "use another port, e.g. \"127.0.0.1:9900\"",
        );
    }
    if !listen.ip().is_loopback() {
        s.warn(
            "listen",
            "is reachable from other machines; the admin API and dashboard are then protected by the token alone",
            "keep it on 127.0.0.1 and reach it through SSH or a VPN, or firewall the port",
        );
    }
    s.finish();
    Some(AdminConfig {
        listen,
        token: token?,
    })
}
