//! The prompt (prefix) cache of one model worker: the KV caches of finished
//! sequences, keyed by the tokens they hold. A new prompt reuses the entry
//! sharing its longest token prefix (the KV cache trimmed to it; MLX arrays
//! are immutable, so the entry stays intact while the new sequence writes past
//! the prefix). Bounded in bytes; the least recently used entries go first.

use engine::models::KvCache;

struct Entry {
    tokens: Vec<u32>,
    cache: Vec<KvCache>,
    bytes: usize,
    last_used: u64,
}

pub(crate) struct PrefixCache {
    entries: Vec<Entry>,
    budget_bytes: usize,
    used_bytes: usize,
    clock: u64,
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PrefixCache {
    pub(crate) fn new(budget_bytes: usize) -> PrefixCache {
        PrefixCache {
            entries: Vec::new(),
            budget_bytes,
            used_bytes: 0,
            clock: 0,
        }
    }

    /// A copy of the cache with the longest common prefix with `prompt`, and
    /// that prefix's length (`None` when nothing is shared).
    pub(crate) fn lookup(&mut self, prompt: &[u32]) -> Option<(Vec<KvCache>, usize)> {
        let (i, n) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, prompt)))
            .max_by_key(|&(_, n)| n)?;
        if n == 0 {
            return None;
        }
        self.clock += 1;
        let e = &mut self.entries[i];
        e.last_used = self.clock;
        Some((e.cache.clone(), n))
    }

    /// Keeps `cache`, which holds the KV of `tokens`. Entries whose tokens are
    /// a prefix of `tokens` are superseded and dropped.
    pub(crate) fn insert(&mut self, tokens: Vec<u32>, cache: Vec<KvCache>) {
        if self.budget_bytes == 0 || tokens.is_empty() {
            return;
        }
        let bytes: usize = cache.iter().map(KvCache::nbytes).sum();
        if bytes > self.budget_bytes {
            return;
        }
        // materialise now: a lazy cache would keep its whole graph alive
        if engine::batch::eval_caches(&cache).is_err() {
            return;
        }
        let before = self.entries.len();
        self.entries
            .retain(|e| !(e.tokens.len() <= tokens.len() && tokens.starts_with(&e.tokens)));
        if self.entries.len() != before {
            self.used_bytes = self.entries.iter().map(|e| e.bytes).sum();
        }
        self.clock += 1;
        self.entries.push(Entry {
            tokens,
            cache,
            bytes,
            last_used: self.clock,
        });
        self.used_bytes += bytes;
        while self.used_bytes > self.budget_bytes {
            let Some(lru) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i)
            else {
                break;
            };
            let e = self.entries.swap_remove(lru);
            self.used_bytes -= e.bytes;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_lengths_and_superseding() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
        let mut c = PrefixCache::new(1 << 20);
        assert!(c.lookup(&[1, 2]).is_none());
        c.insert(vec![1, 2], Vec::new());
        c.insert(vec![1, 2, 3], Vec::new());
        assert_eq!(c.len(), 1, "[1, 2] is superseded by [1, 2, 3]");
        c.insert(vec![5], Vec::new());
        assert_eq!(c.lookup(&[1, 2, 9]).map(|x| x.1), Some(2));
        assert_eq!(c.lookup(&[5, 6]).map(|x| x.1), Some(1));
        assert!(c.lookup(&[7]).is_none());
    }
}
