//! Which other shards have live subscribers on which channel.
//!
//! A shard announces over the rings when a channel gains its first local
//! subscriber and when it loses its last; every shard keeps the resulting
//! bit set per channel, so a publish is sent only to shards that want it.

use std::collections::HashMap;

/// Bit sets of interested remote shards, per channel.
#[derive(Debug, Default)]
pub struct Interest {
    shards_by_channel: HashMap<Box<str>, u64>,
}

impl Interest {
    /// Records that `shard` gained (or lost) subscribers on `channel`.
    pub fn set(&mut self, channel: &str, shard: usize, interested: bool) {
        let bit = 1u64 << shard;
        if interested {
            *self.shards_by_channel.entry(channel.into()).or_default() |= bit;
        } else if let Some(mask) = self.shards_by_channel.get_mut(channel) {
            *mask &= !bit;
            if *mask == 0 {
                self.shards_by_channel.remove(channel);
            }
        }
    }

    /// The remote shards with subscribers on `channel`, as a bit set.
    pub fn shards_for(&self, channel: &str) -> u64 {
        self.shards_by_channel.get(channel).copied().unwrap_or(0)
    }

    /// Number of channels some remote shard listens to.
    pub fn len(&self) -> usize {
        self.shards_by_channel.len()
    }

    /// True when no remote shard listens to anything.
    pub fn is_empty(&self) -> bool {
        self.shards_by_channel.is_empty()
    }
}

/// The shard ids set in `mask`, lowest first.
pub fn shard_ids(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let id = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        Some(id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gains_and_losses_per_shard() {
        let mut interest = Interest::default();
        interest.set("c", 1, true);
        interest.set("c", 3, true);
        assert_eq!(
            shard_ids(interest.shards_for("c")).collect::<Vec<_>>(),
            vec![1, 3]
        );
        interest.set("c", 1, false);
        assert_eq!(
            shard_ids(interest.shards_for("c")).collect::<Vec<_>>(),
            vec![3]
        );
        interest.set("c", 3, false);
        assert!(
            interest.is_empty(),
            "no entry kept for a channel nobody wants"
        );
        interest.set("x", 2, false);
        assert_eq!(interest.shards_for("x"), 0);
    }
}
