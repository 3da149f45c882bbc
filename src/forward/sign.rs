//! Outbound signing: `[route.upstream] sign = { scheme = "standard", secret = "whsec_…" }`.
//!
//! Every forwarded request gets Standard Webhooks headers (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`) over the body exactly as sent, so the upstream (an n8n workflow, a
//! custom agent) can check with any Standard Webhooks or Svix library that the request came
//! through the gateway. The message id is `msg_` + the request id: unique per request, stable
//! if the same request is sent again, and the same id as in the gateway's audit log.
//! Client-sent headers of the same names are replaced.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{OutboundScheme, OutboundSignConfig, Provider};
use crate::policy::guards::signature::{SignInput, sign};
use crate::secret::Secret;

/// Signs forwarded requests for one route.
#[derive(Debug, Clone)]
pub struct OutboundSigner {
    scheme: OutboundScheme,
    secret: Secret,
}

impl OutboundSigner {
    /// A signer for a route's `sign` setting.
    pub fn new(cfg: &OutboundSignConfig) -> Self {
        OutboundSigner {
            scheme: cfg.scheme,
            secret: cfg.secret.clone(),
        }
    }

    /// The message id for a request.
    pub fn message_id(request_id: &str) -> String {
        format!("msg_{request_id}")
    }

    /// Adds the signature headers for `body` to `headers`, at Unix time `now`.
    pub fn apply(&self, headers: &mut HeaderMap, body: &[u8], request_id: &str, now: i64) {
        let provider = match self.scheme {
            OutboundScheme::Standard => Provider::Standard,
        };
        let id = Self::message_id(request_id);
        let input = SignInput {
            body,
            timestamp: now,
            id: &id,
            url: None,
        };
        // The secret was validated when the config was loaded, so signing cannot fail here; if
        // it somehow did, the upstream gets no signature and refuses, which is the safe side.
        let Ok(signed) = sign(&provider, std::slice::from_ref(&self.secret), &input) else {
            tracing::error!("outbound signing failed; forwarding unsigned");
            return;
        };
        for (name, value) in signed {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(n, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SignatureConfig;
    use crate::policy::guards::signature::{SignedRequest, Verifier};
    use std::time::Duration;

    #[test]
    fn signed_headers_verify_as_standard_webhooks_and_replace_client_ones() {
        let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let signer = OutboundSigner::new(&OutboundSignConfig {
            scheme: OutboundScheme::Standard,
            secret: secret.clone(),
        });
        let mut h = HeaderMap::new();
        h.insert("webhook-signature", HeaderValue::from_static("v1,forged"));
        signer.apply(&mut h, b"{\"a\":1}", "0192abc", 1_700_000_000);
        assert_eq!(h["webhook-id"], "msg_0192abc");
        assert_eq!(h["webhook-timestamp"], "1700000000");
        assert_eq!(h.get_all("webhook-signature").iter().count(), 1);
        let v = Verifier::new(&SignatureConfig {
            provider: Provider::Standard,
            secrets: vec![secret],
            tolerance: Duration::from_secs(300),
            replay: true,
        });
        let req = SignedRequest {
            headers: &h,
            body: b"{\"a\":1}",
            path: "/",
            query: None,
        };
        assert!(v.verify(&req, 1_700_000_000).is_ok());
    }
}
