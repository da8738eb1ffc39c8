//! Input limits, one place for all of them (the README's and SECURITY.md's
//! tables quote these), and how a bad value is quoted in an error message.

/// Longest FQDN (RFC 1035).
pub const MAX_FQDN: usize = 253;
/// Longest host key, depot key or other secret token.
pub const MAX_KEY: usize = 256;
/// Longest template file name (a Linux file name component limit).
pub const MAX_TEMPLATE_NAME: usize = 255;
/// Longest product id, version or config/property id.
pub const MAX_ID: usize = 128;
/// Longest single value: a property value, a kernel command-line item, a URL.
pub const MAX_VALUE: usize = 4096;
/// Most items in one list: values of a config, kernel items, properties, or
/// the objects of one Admin call… except bulk Admin writes, see `MAX_BULK`.
pub const MAX_ITEMS: usize = 1000;
/// Most objects in one bulk Admin write (one transaction).
pub const MAX_BULK: usize = 100_000;
/// Most items of one section of one `ImportInventory` (one transaction,
/// bounded in bytes by [`MAX_IMPORT_BYTES`]): a site of 100,000 clients has
/// several config states and netboot product-on-clients per client.
pub const MAX_IMPORT_ITEMS: usize = 1_000_000;
/// Bytes of one `ImportInventory` stream, all parts together: each part is
/// bounded by gRPC's message limit, the parts' number only by this (a full
/// 100,000-client site's dump is well under half of it).
pub const MAX_IMPORT_BYTES: usize = 256 << 20;
/// How many characters of a bad value an error message quotes.
pub const QUOTED: usize = 64;

/// `value` for an error message: Debug-quoted, at most [`QUOTED`]
/// characters of it, with its full length when it was cut. An error must
/// never grow with its input (a 1 MB bad name would not fit in the reply's
/// metadata).
pub fn shown(value: &str) -> String {
    match value.char_indices().nth(QUOTED) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &value[..cut], value.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_and_measured() {
        assert_eq!(shown("abc"), "\"abc\"");
        let long = "é".repeat(1000);
        let s = shown(&long);
        assert!(
            s.starts_with(&format!("\"{}\"…", "é".repeat(QUOTED))),
            "{s}"
        );
        assert!(s.ends_with("(2000 bytes)"), "{s}");
        assert!(s.len() < 200);
    }

    #[test]
    fn the_worst_quote_stays_under_a_kibibyte() {
        // Each quoted character escaped at its longest (`\u{10ffff}`): the
        // limit is on characters, so bytes can reach ten times that.
        let worst = "\u{10ffff}".repeat(100_000);
        let s = shown(&worst);
        assert!(s.len() > 400, "{} bytes", s.len());
        assert!(s.len() < 1024, "{} bytes", s.len());
    }
}
