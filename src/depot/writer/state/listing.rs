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
        let held = self
            .held
            .range::<str, _>((start(), Bound::Unbounded))
            .map(|(f, h)| (f, self.held_info(f, h)));
        let defused = self
            .defused
            .range::<str, _>((start(), Bound::Unbounded))
            .map(|(f, d)| (f, defused_info(f, d)));
        let mut merged: Vec<(&Fqdn, ConfigInfo)> = held.chain(defused).collect();
        merged.sort_by(|a, b| a.0.cmp(b.0));
        let mut configs: Vec<ConfigInfo> = Vec::new();
        let mut next_after = None;
        for (_, info) in merged {
            if product.is_some_and(|p| p != info.product_id.as_str()) {
                continue;
            }
            if configs.len() == limit {
                next_after = configs.last().map(|c| c.fqdn.to_string());
                break;
            }
            configs.push(info);
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
