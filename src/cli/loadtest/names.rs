//! The synthetic namespace of one run, apart from any real inventory:
//! clients `lt-<n>.<run>.loadtest.invalid` (`.invalid` never resolves),
//! locally administered unicast MACs carrying 22 bits of the run id and 24
//! of `n`, and UUIDs `10ad7e57-<run>-…`,
//! one netboot product `loadtest-<run>`.

use crate::proto;

/// The domain every synthetic client and self-contained depot lives under.
pub const DOMAIN: &str = "loadtest.invalid";

/// First client number of the `direct` scenario's hosts (never in the
/// inventory): the upper half of the 24 bits a MAC has for the number.
pub const DIRECT_BASE: u32 = 1 << 23;

// Bulk and trickle clients of both paths never reach the direct hosts.
const _: () = assert!(4 * super::args::MAX_CLIENTS <= DIRECT_BASE);

/// One run's namespace.
#[derive(Debug, Clone, Copy)]
pub struct Names {
    run: u32,
}

impl Names {
    /// A fresh run id.
    pub fn random() -> Self {
        Self {
            run: rand::random(),
        }
    }

    /// The run id, 8 hex digits.
    pub fn run_id(&self) -> String {
        format!("{:08x}", self.run)
    }

    /// Every client FQDN of this run ends so.
    pub fn suffix(&self) -> String {
        format!(".{}.{DOMAIN}", self.run_id())
    }

    /// Client n's FQDN.
    pub fn fqdn(&self, n: u32) -> String {
        format!("lt-{n}{}", self.suffix())
    }

    /// Client n's MAC: locally administered unicast (the first octet's
    /// low bits `10`), 22 bits of the run id (6 in the first octet, 16 in
    /// the next two), then 24 bits of n. Two runs' MACs meet with a chance
    /// of one in four million, not one in 256 as with the run's low byte
    /// only (a run left behind by an abandoned clean-up failed a later one
    /// so, on a MAC another client holds).
    pub fn mac(&self, n: u32) -> String {
        let b = n.to_be_bytes();
        let first = (((self.run >> 16) & 0x3f) as u8) << 2 | 0x02;
        format!(
            "{first:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            (self.run >> 8) & 0xff,
            self.run & 0xff,
            b[1],
            b[2],
            b[3]
        )
    }

    /// Client n's MAC-named PXE file.
    pub fn mac_file(&self, n: u32) -> String {
        format!("01-{}", self.mac(n).replace(':', "-"))
    }

    /// Client n's system UUID (version-4 shaped).
    pub fn uuid(&self, n: u32) -> String {
        format!(
            "10ad7e57-{:04x}-4{:03x}-8000-{n:012x}",
            self.run >> 16,
            self.run & 0xfff
        )
    }

    /// The netboot product of this run.
    pub fn product(&self) -> String {
        format!("loadtest-{}", self.run_id())
    }

    /// The i-th of the site's other products (`--site-products`).
    pub fn site_product(&self, i: u32) -> String {
        format!("loadtest-{}-site-{i}", self.run_id())
    }

    /// Client n as a host record, with a fresh host key.
    pub fn host(&self, n: u32) -> proto::Host {
        proto::Host {
            id: self.fqdn(n),
            hardware_address: self.mac(n),
            system_uuid: self.uuid(n),
            ip_address: String::new(),
            opsi_host_key: format!("{:032x}", rand::random::<u128>()),
        }
    }

    /// Whether `fqdn` belongs to this run.
    pub fn owns(&self, fqdn: &str) -> bool {
        fqdn.ends_with(&self.suffix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Fqdn, Mac, SystemUuid, is_pxe_file_name};

    #[test]
    fn names_are_valid_and_distinct() {
        let names = Names { run: 0xdead_beef };
        for n in [0, 1, 65_535, DIRECT_BASE - 1, DIRECT_BASE + 7] {
            Fqdn::parse(&names.fqdn(n), "fqdn").unwrap();
            let mac = Mac::parse(&names.mac(n), "mac").unwrap();
            assert_eq!(mac.pxe_file_name(), names.mac_file(n));
            assert!(is_pxe_file_name(&names.mac_file(n)));
            let uuid = SystemUuid::parse(&names.uuid(n), "uuid").unwrap();
            assert!(is_pxe_file_name(uuid.as_str()));
            assert!(names.owns(&names.fqdn(n)));
        }
        assert_ne!(names.mac(1), names.mac(DIRECT_BASE + 1));
        // 22 bits of the run id: runs differing in any of them differ.
        for bit in 0..22 {
            let other = Names {
                run: names.run ^ (1 << bit),
            };
            assert_ne!(names.mac(5), other.mac(5), "bit {bit}");
            let first = u8::from_str_radix(&other.mac(5)[..2], 16).unwrap();
            assert_eq!(first & 0x03, 0x02, "locally administered unicast");
        }
        assert_ne!(names.uuid(1), names.uuid(DIRECT_BASE + 1));
        assert!(!names.owns("lt-1.other.loadtest.invalid"));
        crate::domain::ProductId::parse(&names.product(), "product").unwrap();
    }
}
