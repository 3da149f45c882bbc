//! The IP guard: `[route.ip]` allow and deny lists over the client address.

use ipnet::IpNet;

use crate::config::{IpRules, RuleMode};
use crate::policy::{Denial, Exchange, Reason};

/// Refuses addresses in `deny` (`ip_denied`) and, when `allow` is not empty, addresses outside
/// it (`ip_not_allowed`). Deny wins over allow. In alert mode the request passes and its
/// event carries the reason as a flag instead.
///
/// The address is the resolved client address (IPv4-mapped IPv6 already canonicalised, and
/// the config's mapped networks written the IPv4 way), so `::ffff:203.0.113.7` and
/// `203.0.113.7` are the same caller.
#[derive(Debug, Clone)]
pub struct IpGuard {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    mode: RuleMode,
}

impl IpGuard {
    /// A guard for `rules`.
    pub fn new(rules: &IpRules) -> Self {
        IpGuard {
            allow: rules.allow.clone(),
            deny: rules.deny.clone(),
            mode: rules.mode,
        }
    }

    /// Checks the client address.
    pub fn check(&self, ex: &mut Exchange) -> Result<(), Denial> {
        let ip = ex.client_ip;
        let reason = if self.deny.iter().any(|n| n.contains(&ip)) {
            Reason::IpDenied
        } else if !self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&ip)) {
            Reason::IpNotAllowed
        } else {
            return Ok(());
        };
        match self.mode {
            RuleMode::Enforce => Err(Denial::new(reason)),
            RuleMode::Alert => {
                ex.flag(reason);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::guards::testing::exchange;

    fn guard(allow: &[&str], deny: &[&str], mode: RuleMode) -> IpGuard {
        IpGuard::new(&IpRules {
            allow: allow.iter().map(|s| s.parse().unwrap()).collect(),
            deny: deny.iter().map(|s| s.parse().unwrap()).collect(),
            mode,
        })
    }

    fn verdict(g: &IpGuard, ip: &str) -> (Result<(), Reason>, Vec<Reason>) {
        let mut ex = exchange(ip);
        let r = g.check(&mut ex).map_err(|d| d.reason);
        (r, ex.flags)
    }

    #[test]
    fn allow_list_admits_only_its_networks() {
        let g = guard(&["203.0.113.0/24", "2001:db8::/32"], &[], RuleMode::Enforce);
        assert_eq!(verdict(&g, "203.0.113.9"), (Ok(()), vec![]));
        assert_eq!(verdict(&g, "2001:db8:1::5"), (Ok(()), vec![]));
        assert_eq!(verdict(&g, "198.51.100.1").0, Err(Reason::IpNotAllowed));
        assert_eq!(verdict(&g, "2001:db9::1").0, Err(Reason::IpNotAllowed));
    }

    #[test]
    fn deny_wins_over_allow() {
        let g = guard(&["203.0.113.0/24"], &["203.0.113.7/32"], RuleMode::Enforce);
        assert_eq!(verdict(&g, "203.0.113.7").0, Err(Reason::IpDenied));
        assert_eq!(verdict(&g, "203.0.113.8").0, Ok(()));
    }

    #[test]
    fn deny_only_lets_everyone_else_through() {
        let g = guard(
            &[],
            &["198.51.100.0/24", "2001:db8:bad::/48"],
            RuleMode::Enforce,
        );
        assert_eq!(verdict(&g, "198.51.100.200").0, Err(Reason::IpDenied));
        assert_eq!(verdict(&g, "2001:db8:bad:1::1").0, Err(Reason::IpDenied));
        assert_eq!(verdict(&g, "2001:db8:bae::1").0, Ok(()));
        assert_eq!(verdict(&g, "192.0.2.1").0, Ok(()));
    }

    #[test]
    fn alert_mode_lets_through_and_flags() {
        let g = guard(&["203.0.113.0/24"], &["203.0.113.7/32"], RuleMode::Alert);
        assert_eq!(
            verdict(&g, "198.51.100.1"),
            (Ok(()), vec![Reason::IpNotAllowed])
        );
        assert_eq!(verdict(&g, "203.0.113.7"), (Ok(()), vec![Reason::IpDenied]));
        assert_eq!(verdict(&g, "203.0.113.8"), (Ok(()), vec![]));
    }
}
