//! The User-Agent guard: `[route.user_agent] allow_prefixes`.

use http::header;

use crate::config::{RuleMode, UserAgentRules};
use crate::policy::{Denial, Exchange, Reason};

/// Refuses requests whose `User-Agent` does not start with one of the allowed prefixes
/// (compared without regard to ASCII case), or that send none (`user_agent_denied`). In alert
/// mode the request passes and its event carries the flag instead.
///
/// A User-Agent is whatever the caller says it is: this is a filter against scanners and
/// mistakes, never a credential.
#[derive(Debug, Clone)]
pub struct UserAgentGuard {
    prefixes: Vec<String>,
    mode: RuleMode,
}

impl UserAgentGuard {
    /// A guard for `rules`.
    pub fn new(rules: &UserAgentRules) -> Self {
        UserAgentGuard {
            prefixes: rules
                .allow_prefixes
                .iter()
                .map(|p| p.to_ascii_lowercase())
                .collect(),
            mode: rules.mode,
        }
    }

    /// Checks `User-Agent`.
    pub fn check(&self, ex: &mut Exchange) -> Result<(), Denial> {
        let mut values = ex.headers.get_all(header::USER_AGENT).iter();
        let detail = match (values.next(), values.next()) {
            (None, _) => "no User-Agent",
            // Two fields: the upstream may read either, so which one would be checked?
            (Some(_), Some(_)) => "more than one User-Agent",
            (Some(v), None) => {
                let ua = v.as_bytes();
                let matches = self.prefixes.iter().any(|p| {
                    ua.len() >= p.len() && ua[..p.len()].eq_ignore_ascii_case(p.as_bytes())
                });
                if matches {
                    return Ok(());
                }
                "User-Agent matches no allowed prefix"
            }
        };
        match self.mode {
            RuleMode::Enforce => Err(Denial::new(Reason::UserAgentDenied).with_detail(detail)),
            RuleMode::Alert => {
                ex.flag(Reason::UserAgentDenied);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::guards::testing::exchange;
    use http::HeaderValue;

    fn guard(mode: RuleMode) -> UserAgentGuard {
        UserAgentGuard::new(&UserAgentRules {
            allow_prefixes: vec!["Voiceflow".into(), "n8n/".into()],
            mode,
        })
    }

    fn verdict(g: &UserAgentGuard, ua: Option<&[u8]>) -> (Result<(), Denial>, Vec<Reason>) {
        let mut ex = exchange("203.0.113.1");
        if let Some(ua) = ua {
            ex.headers
                .insert(header::USER_AGENT, HeaderValue::from_bytes(ua).unwrap());
        }
        let r = g.check(&mut ex);
        (r, ex.flags)
    }

    #[test]
    fn listed_prefixes_pass_in_any_case() {
        let g = guard(RuleMode::Enforce);
        for ua in [
            &b"Voiceflow/2.1 (api step)"[..],
            b"voiceflow",
            b"VOICEFLOW-runtime",
            b"n8n/1.80",
        ] {
            assert_eq!(verdict(&g, Some(ua)), (Ok(()), vec![]), "{ua:?}");
        }
    }

    #[test]
    fn others_and_missing_are_refused_with_their_detail() {
        let g = guard(RuleMode::Enforce);
        for (ua, detail) in [
            (
                Some(&b"curl/8.5"[..]),
                "User-Agent matches no allowed prefix",
            ),
            (Some(b"Voicefl"), "User-Agent matches no allowed prefix"),
            (Some(b"n8n"), "User-Agent matches no allowed prefix"),
            (Some(b"x Voiceflow"), "User-Agent matches no allowed prefix"),
            (
                Some(b"\xffVoiceflow"),
                "User-Agent matches no allowed prefix",
            ),
            (None, "no User-Agent"),
        ] {
            let (r, flags) = verdict(&g, ua);
            assert_eq!(
                r,
                Err(Denial::new(Reason::UserAgentDenied).with_detail(detail)),
                "{ua:?}"
            );
            assert!(flags.is_empty());
        }
    }

    /// Two User-Agent fields, one allowed: the upstream might read the other.
    #[test]
    fn a_second_user_agent_is_refused() {
        let g = guard(RuleMode::Enforce);
        let mut ex = exchange("203.0.113.1");
        ex.headers
            .append(header::USER_AGENT, HeaderValue::from_static("Voiceflow"));
        ex.headers
            .append(header::USER_AGENT, HeaderValue::from_static("curl/8.5"));
        assert_eq!(
            g.check(&mut ex),
            Err(Denial::new(Reason::UserAgentDenied).with_detail("more than one User-Agent"))
        );
    }

    #[test]
    fn alert_mode_flags_instead_of_refusing() {
        let g = guard(RuleMode::Alert);
        assert_eq!(
            verdict(&g, Some(b"curl/8.5")),
            (Ok(()), vec![Reason::UserAgentDenied])
        );
        assert_eq!(verdict(&g, None), (Ok(()), vec![Reason::UserAgentDenied]));
        assert_eq!(verdict(&g, Some(b"Voiceflow")), (Ok(()), vec![]));
    }
}
