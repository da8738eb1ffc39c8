//! Listing the held configs, and the reads whose files are still present,
//! in FQDN order, a page at a time.

use super::super::messages::{ConfigInfo, ConfigPage, HeldState};
use super::super::records::{Defused, Held};
use super::State;
use crate::domain::Fqdn;

impl State {
    /// A page of held configs (and defused reads) after the FQDN `after`, of
    /// `product` if given.
    pub fn page(&self, after: Option<&str>, limit: usize, product: Option<&str>) -> ConfigPage {
        use std::ops::Bound;
        let start = || after.map_or(Bound::Unbounded, Bound::Excluded);
        // Both maps are in FQDN order: merged as they go, so that a page
        // costs its own configs, not every one after it (a listing of
        // 100,000 in pages of 1,000 made ~5 million copies).
        let mut held = (self.held.range::<str, _>((start(), Bound::Unbounded))).peekable();
        let mut defused = (self.defused.range::<str, _>((start(), Bound::Unbounded))).peekable();
        let merged = std::iter::from_fn(|| match (held.peek(), defused.peek()) {
            (Some((h, _)), Some((d, _))) if d < h => defused.next().map(Entry::Defused),
            (Some(_), _) => held.next().map(Entry::Held),
            (None, _) => defused.next().map(Entry::Defused),
        });
        let mut configs: Vec<ConfigInfo> = Vec::new();
        let mut next_after = None;
        for entry in merged {
            if product.is_some_and(|p| p != entry.product_id()) {
                continue;
            }
            // A client both held and defused stays on one page: the next
            // page starts after its FQDN.
            if configs.len() >= limit && configs.last().is_none_or(|c| c.fqdn != *entry.fqdn()) {
                next_after = configs.last().map(|c| c.fqdn.to_string());
                break;
            }
            configs.push(match entry {
                Entry::Held((f, h)) => self.held_info(f, h),
                Entry::Defused((f, d)) => defused_info(f, d),
            });
        }
        ConfigPage {
            configs,
            next_after,
            total: self.held.len() + self.defused.len(),
        }
    }

    fn held_info(&self, fqdn: &Fqdn, held: &Held) -> ConfigInfo {
        ConfigInfo {
            fqdn: fqdn.clone(),
            product_id: held.product_id.clone(),
            action_request: held.action_request,
            files: held.files.clone(),
            template: held.template.clone(),
            since: held.since,
            revision: held.revision,
            state: HeldState::Held,
        }
    }
}

/// A held config or a defused read, as the merge finds it.
enum Entry<'a> {
    Held((&'a Fqdn, &'a Held)),
    Defused((&'a Fqdn, &'a Defused)),
}

impl Entry<'_> {
    fn fqdn(&self) -> &Fqdn {
        match self {
            Entry::Held((f, _)) | Entry::Defused((f, _)) => f,
        }
    }

    fn product_id(&self) -> &str {
        match self {
            Entry::Held((_, h)) => h.product_id.as_str(),
            Entry::Defused((_, d)) => d.product_id.as_str(),
        }
    }
}

fn defused_info(fqdn: &Fqdn, d: &Defused) -> ConfigInfo {
    ConfigInfo {
        fqdn: fqdn.clone(),
        product_id: d.product_id.clone(),
        action_request: d.action_request,
        files: d.files.clone(),
        template: String::new(),
        since: d.read_at,
        revision: d.revision,
        state: HeldState::ReadFilePresent,
    }
}
