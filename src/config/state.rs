//! `[state]`: where limits, single-use ids, failure counters and bans are kept.

use super::reader::Section;

/// `[state]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// Most keys the in-memory state holds; beyond it the entries closest to expiring are
    /// dropped. An entry takes 32 bytes plus the hash table's slack, about 90 bytes at worst:
    /// the default 1,000,000 needs up to about 90 MB. Default 1,000,000.
    pub max_entries: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            max_entries: 1_000_000,
        }
    }
}

pub(super) fn read_state(section: Option<Section<'_, '_>>) -> StateConfig {
    let mut cfg = StateConfig::default();
    let Some(s) = section else {
        return cfg;
    };
    if let Some(n) = s.integer("max_entries", 1_024, 1_000_000_000) {
        cfg.max_entries = n as usize;
    }
    s.finish();
    cfg
}
