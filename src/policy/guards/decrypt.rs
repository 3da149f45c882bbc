//! The decrypt guard: replaces an encrypted body (PHP `openssl_encrypt` style) by its
//! plaintext before forwarding; refuses what does not decrypt (`decrypt_failed`, 400).
//!
//! It runs last, after the URL secret, IP rules and limits, so unauthenticated garbage never
//! makes the gateway do crypto work. Which step failed goes to the audit log as the detail;
//! the client sees only the generic 400, so failures reveal nothing (no padding oracle).

use bytes::Bytes;
use http::header::{self, HeaderValue};

use crate::config::DecryptConfig;
use crate::decrypt::{DecryptError, Decryptor, Mode};
use crate::policy::{Denial, Exchange, Reason};

/// Decrypts the body in place.
#[derive(Debug, Clone)]
pub struct DecryptGuard {
    decryptor: Decryptor,
    iv_param: String,
    tag_param: String,
    content_type: HeaderValue,
    require_json: bool,
}

impl DecryptGuard {
    /// A guard from `[route.decrypt]`.
    pub fn new(cfg: &DecryptConfig) -> Self {
        DecryptGuard {
            decryptor: cfg.decryptor.clone(),
            iv_param: cfg.iv_param.clone(),
            tag_param: cfg.tag_param.clone(),
            content_type: cfg.forward_content_type.clone(),
            require_json: cfg.require_json,
        }
    }

    /// Decrypts `ex.body`, sets the forwarded `Content-Type` and drops the IV and tag
    /// parameters from the forwarded query.
    pub fn check(&self, ex: &mut Exchange) -> Result<(), Denial> {
        let iv = ex.query_param(&self.iv_param);
        let tag = match self.decryptor.cipher().mode() {
            Mode::Gcm => ex.query_param(&self.tag_param),
            Mode::Cbc | Mode::Ctr => None,
        };
        let plain = self
            .decryptor
            .decrypt_checked(&ex.body, iv.as_deref(), tag.as_deref(), self.require_json)
            .map_err(refuse)?;
        ex.body = Bytes::from(plain);
        ex.headers
            .insert(header::CONTENT_TYPE, self.content_type.clone());
        ex.consume_query_param(&self.iv_param);
        if self.decryptor.cipher().mode() == Mode::Gcm {
            ex.consume_query_param(&self.tag_param);
        }
        Ok(())
    }
}

fn refuse(e: DecryptError) -> Denial {
    Denial::new(Reason::DecryptFailed).with_detail(e.as_str())
}
