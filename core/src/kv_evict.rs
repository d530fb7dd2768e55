//! Eviction policies: what a full KV cache gives up so that generation goes on.
//!
//! A policy is chosen at run time ([`EvictConfig`], `--kv-policy`) and acts on slots
//! only, through three backend ops: compaction ([`crate::ops::move_rows`]), re-rotation
//! of keys by a position delta ([`crate::ops::rope_shift`]) and, for the score-based
//! policies, the attention op's optional per-slot mass ([`crate::ops::attention_mass`]).
//! The mechanics live in [`crate::kv_cache::KvCache::prepare`]; this module says what
//! each policy keeps.
//!
//! | policy | keeps | positions | re-rotated per eviction |
//! |---|---|---|---|
//! | `none` | everything; a full cache is an error | original | nothing |
//! | `window` | the most recent `capacity - n` tokens | in-cache (0..len) | every kept key, by −evicted |
//! | `sinks` | slots `0..sinks` + the most recent (StreamingLLM) | in-cache | every key after the sinks, by −evicted |
//! | `shift` | slots `0..keep`, then drops half of the rest at once (llama.cpp's context shift) | in-cache | every key after the dropped block, by −dropped |
//! | `h2o` | the `capacity / 2` most recent + the largest accumulated attention mass | original | nothing (the last slot fills each hole) |
//! | `tova` | the largest attention mass of the latest step's queries | original | nothing |
//!
//! "In-cache" positions: the token in slot `s` is at RoPE position `s`, so the model
//! never sees a distance larger than the cache (StreamingLLM's rule); "original": the
//! position the token had in the text.
//!
//! Every policy evicts in blocks ([`EvictConfig::block`], `--kv-evict-block`; default
//! `capacity / 16`): a full cache frees at least a block at once (as far as that much
//! is evictable), so compaction and re-rotation are paid once per block of decoded
//! tokens. `window`/`sinks` then drop a block of the oldest; `h2o`/`tova` the block of
//! lowest mass at that step; `shift` already drops half.
//!
//! The score-based policies keep one slot set for all layers and heads (the mass is
//! summed over them), where H2O and TOVA choose per layer (and TOVA per head): one
//! `positions` array, one compaction per eviction.

use alloc::string::String;

use crate::error::{Error, Result};

/// Which tokens a full cache gives up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvPolicy {
    /// None: a full cache is an error naming `--kv-policy`.
    #[default]
    None,
    /// Keep only the most recent tokens, positions renumbered in the cache.
    Window,
    /// Attention sinks (StreamingLLM): the first `sinks` tokens + the most recent.
    Sinks,
    /// llama.cpp's context shift: keep `keep` tokens, drop half of the rest at once.
    Shift,
    /// Heavy hitters (H2O): recent half + largest accumulated attention mass.
    H2o,
    /// TOVA: largest attention of the latest step's queries.
    Tova,
}

impl KvPolicy {
    pub const ALL: [KvPolicy; 6] = [
        KvPolicy::None,
        KvPolicy::Window,
        KvPolicy::Sinks,
        KvPolicy::Shift,
        KvPolicy::H2o,
        KvPolicy::Tova,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            KvPolicy::None => "none",
            KvPolicy::Window => "window",
            KvPolicy::Sinks => "sinks",
            KvPolicy::Shift => "shift",
            KvPolicy::H2o => "h2o",
            KvPolicy::Tova => "tova",
        }
    }

    pub fn parse(s: &str) -> Option<KvPolicy> {
        KvPolicy::ALL.into_iter().find(|p| p.name() == s)
    }

    /// Ranks slots by attention mass (the attention op's optional output).
    pub const fn needs_mass(self) -> bool {
        matches!(self, KvPolicy::H2o | KvPolicy::Tova)
    }

    /// Renumbers positions within the cache (and so re-rotates moved keys).
    pub const fn in_cache_positions(self) -> bool {
        matches!(self, KvPolicy::Window | KvPolicy::Sinks | KvPolicy::Shift)
    }
}

/// The automatic eviction block ([`EvictConfig::block`] = 0) is the budget divided by
/// this (at least one slot): a decode step then pays for compaction and re-rotation once
/// per `capacity / 16` tokens, so the per-token cost stays ~16 row moves per layer
/// whatever the budget, while a token loses at most 1/16 of the budget's context
/// (measured: docs/kv-cache.md, *Eviction in blocks*).
pub const AUTO_BLOCK_DIVISOR: usize = 16;

/// A policy and its parameters (`--kv-policy`, `--kv-sinks`, `--kv-keep`,
/// `--kv-evict-block`); the budget is the cache's capacity (`--ctx`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvictConfig {
    pub policy: KvPolicy,
    /// `sinks`: slots at the start that are never evicted (StreamingLLM uses 4).
    pub sinks: usize,
    /// `shift`: slots at the start that are never evicted (llama.cpp's `n_keep`).
    pub keep: usize,
    /// Fewest slots one eviction frees (as far as the policy has that many evictable):
    /// a full cache gives up `max(needed, block)` slots at once, so its cost is paid once
    /// per `block` decoded tokens. `1` evicts exactly what each chunk needs; `0` chooses
    /// `capacity / AUTO_BLOCK_DIVISOR` ([`EvictConfig::block_slots`]).
    pub block: usize,
}

impl Default for EvictConfig {
    fn default() -> Self {
        EvictConfig {
            policy: KvPolicy::None,
            sinks: 4,
            keep: 0,
            block: 0,
        }
    }
}

impl EvictConfig {
    /// The eviction block for a cache of `capacity` slots (`block`, or the automatic one
    /// when it is 0).
    pub fn block_slots(&self, capacity: usize) -> usize {
        match self.block {
            0 => (capacity / AUTO_BLOCK_DIVISOR).max(1),
            b => b,
        }
    }

    /// How many slots to evict so that `n` new tokens fit in a cache holding `len` of
    /// `capacity` slots, of which `evictable` may go: what is needed, raised to the block
    /// (as far as there is that much to evict). `None` when nothing needs to go.
    pub fn evict_count(&self, len: usize, n: usize, capacity: usize, evictable: usize) -> Option<usize> {
        let need = (len + n).checked_sub(capacity).filter(|&k| k > 0)?;
        Some(need.max(self.block_slots(capacity).min(evictable)))
    }

    /// Slots at the start of the cache the policy never evicts.
    pub fn protected_prefix(&self) -> usize {
        match self.policy {
            KvPolicy::Sinks => self.sinks,
            KvPolicy::Shift => self.keep,
            _ => 0,
        }
    }

    /// H2O's recent window: the most recent `capacity / 2` tokens are never evicted.
    pub fn recent(&self, capacity: usize) -> usize {
        match self.policy {
            KvPolicy::H2o => capacity / 2,
            _ => 0,
        }
    }

    /// Most tokens one forward chunk may add to a cache of `capacity` slots under this
    /// policy (what stays after evicting everything evictable).
    pub fn max_insert(&self, capacity: usize) -> usize {
        capacity.saturating_sub(self.protected_prefix().max(self.recent(capacity)))
    }

    /// Checks the parameters against a cache of `capacity` slots.
    pub fn check(&self, capacity: usize) -> Result<()> {
        if self.policy != KvPolicy::None && self.max_insert(capacity) == 0 {
            return Err(Error::range(
                String::from(match self.policy {
                    KvPolicy::Sinks => "--kv-sinks (must leave room in --ctx)",
                    KvPolicy::Shift => "--kv-keep (must leave room in --ctx)",
                    _ => "--ctx under this --kv-policy",
                }),
                self.protected_prefix().max(self.recent(capacity)) as u64,
                capacity.saturating_sub(1) as u64,
            ));
        }
        Ok(())
    }

    /// How many slots to drop, starting at slot `start`, so that `n` new tokens fit in a
    /// cache holding `len` of `capacity` slots — for the contiguous policies (window,
    /// sinks, shift); `None` for the others or when nothing needs to go. At least a
    /// block goes (of the `len - start` evictable slots).
    pub fn contiguous_drop(&self, len: usize, n: usize, capacity: usize) -> Option<(usize, usize)> {
        let start = self.protected_prefix();
        let evictable = len.saturating_sub(start);
        let count = self.evict_count(len, n, capacity, evictable)?;
        match self.policy {
            KvPolicy::Window | KvPolicy::Sinks => Some((start, count)),
            // llama.cpp: n_discard = (n_past - n_keep) / 2, at least what is needed.
            KvPolicy::Shift => Some((start, count.max(evictable / 2))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_every_policy() {
        for p in KvPolicy::ALL {
            assert_eq!(KvPolicy::parse(p.name()), Some(p));
        }
        assert_eq!(KvPolicy::parse("lru"), None);
    }

    #[test]
    fn drops_follow_each_policy() {
        let cfg = |policy| EvictConfig {
            policy,
            sinks: 4,
            keep: 2,
            block: 1,
        };
        // 16 slots, full, one more token.
        assert_eq!(cfg(KvPolicy::Window).contiguous_drop(16, 1, 16), Some((0, 1)));
        assert_eq!(cfg(KvPolicy::Sinks).contiguous_drop(16, 1, 16), Some((4, 1)));
        assert_eq!(cfg(KvPolicy::Shift).contiguous_drop(16, 1, 16), Some((2, 7)));
        assert_eq!(cfg(KvPolicy::Sinks).contiguous_drop(10, 1, 16), None);
        assert_eq!(cfg(KvPolicy::H2o).contiguous_drop(16, 1, 16), None);
        assert_eq!(cfg(KvPolicy::H2o).max_insert(16), 8);
        assert_eq!(cfg(KvPolicy::Sinks).max_insert(16), 12);
        assert!(cfg(KvPolicy::Sinks).check(4).is_err());
        assert!(cfg(KvPolicy::Sinks).check(5).is_ok());
    }

    #[test]
    fn blocks_raise_each_eviction_to_the_block() {
        let cfg = |policy, block| EvictConfig {
            policy,
            sinks: 4,
            keep: 2,
            block,
        };
        // 16 slots, full, one more token: a block of 5 goes at once.
        assert_eq!(cfg(KvPolicy::Window, 5).contiguous_drop(16, 1, 16), Some((0, 5)));
        assert_eq!(cfg(KvPolicy::Sinks, 5).contiguous_drop(16, 1, 16), Some((4, 5)));
        // A chunk needing more than a block evicts what it needs.
        assert_eq!(cfg(KvPolicy::Sinks, 5).contiguous_drop(16, 7, 16), Some((4, 7)));
        // Never more than is evictable (12 slots after the 4 sinks).
        assert_eq!(cfg(KvPolicy::Sinks, 50).contiguous_drop(16, 1, 16), Some((4, 12)));
        // Shift already drops half (7 of the 14 after `keep`); a larger block raises it.
        assert_eq!(cfg(KvPolicy::Shift, 5).contiguous_drop(16, 1, 16), Some((2, 7)));
        assert_eq!(cfg(KvPolicy::Shift, 10).contiguous_drop(16, 1, 16), Some((2, 10)));
        // Nothing to do while the chunk fits.
        assert_eq!(cfg(KvPolicy::Window, 5).contiguous_drop(10, 1, 16), None);
        // Score-based: the count only (the cache picks the slots).
        assert_eq!(cfg(KvPolicy::H2o, 5).evict_count(16, 1, 16, 8), Some(5));
        assert_eq!(cfg(KvPolicy::H2o, 5).evict_count(16, 1, 16, 3), Some(3));
        assert_eq!(cfg(KvPolicy::H2o, 5).evict_count(16, 6, 16, 8), Some(6));
        // Automatic: capacity / 16, at least 1.
        assert_eq!(cfg(KvPolicy::Window, 0).block_slots(256), 16);
        assert_eq!(cfg(KvPolicy::Window, 0).block_slots(8), 1);
        assert_eq!(cfg(KvPolicy::Window, 3).block_slots(256), 3);
    }
}
