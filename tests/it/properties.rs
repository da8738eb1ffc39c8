//! Property tests, run as ordinary tests (no second instrumented build):
//! bundle conversion, rendering and file naming under generated input,
//! including input no caller would send. The longer coverage-guided runs
//! (`fuzz/`, cargo-fuzz) exercise the same entry points; docs/SECURITY.md
//! records what they found.

use pxeconf::depot::render::Renderer;

use proptest::prelude::*;
use pxeconf::domain::{ClientBundle, Mac, SystemUuid, is_pxe_file_name};
use pxeconf::proto;

/// Text that is mostly well-formed, sometimes anything at all.
fn text(good: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        8 => proptest::string::string_regex(good).unwrap(),
        1 => any::<String>(),
        1 => "[ -~\t\r\n%\"]{0,40}",
    ]
}

/// What the bundle strategies draw; [`bundle`] puts it together.
struct Parts {
    id: String,
    mac: String,
    uuid: String,
    key: String,
    product: String,
    template: String,
    service: String,
    append: Vec<String>,
    properties: std::collections::BTreeMap<String, String>,
    boot_mode: i32,
    revision: u64,
}

/// A bundle of `parts`: the rest is fixed.
fn bundle(p: Parts) -> proto::ClientBundle {
    proto::ClientBundle {
        host: Some(proto::Host {
            id: p.id,
            hardware_address: p.mac,
            system_uuid: p.uuid,
            ip_address: String::new(),
            opsi_host_key: p.key,
        }),
        product_on_client: Some(proto::ProductOnClient {
            action_request: "setup".into(),
            ..Default::default()
        }),
        product_on_depot: None,
        product: Some(proto::Product {
            id: p.product,
            product_version: "1.0".into(),
            package_version: "1".into(),
            pxe_config_template: p.template,
        }),
        depot_id: "depot1.example.org".into(),
        service_address: p.service,
        boot_mode: p.boot_mode,
        bootimage_append: p.append,
        product_property_states: p.properties.into_iter().collect(),
        modules: Some(proto::Modules {
            uefi: true,
            secureboot: false,
        }),
        revision: p.revision,
        epoch: Default::default(),
    }
}

prop_compose! {
    fn wire_bundle()(
        id in text("[a-z][a-z0-9-]{0,20}\\.example\\.org"),
        mac in text("([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}"),
        uuid in text("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
        key in text("[0-9a-f]{32}"),
        product in text("[a-z][a-z0-9-]{0,15}"),
        template in text("(|install|sub/install-[a-z]{1,5})"),
        service in text("https://[a-z]{1,10}\\.example\\.org:4447"),
        append in proptest::collection::vec(text("[a-z]{1,8}=[a-zA-Z0-9]{0,8}"), 0..4),
        properties in proptest::collection::btree_map(text("[a-z]{1,8}"), text("[ -~]{0,20}"), 0..4),
        boot_mode in 0i32..4,
        revision in any::<u64>(),
    ) -> proto::ClientBundle {
        bundle(Parts { id, mac, uuid, key, product, template, service, append, properties, boot_mode, revision })
    }
}

prop_compose! {
    /// A bundle the edge mostly accepts; kernel items and property values
    /// from anywhere (the renderer must cope with every accepted one).
    fn render_bundle()(
        id in "[a-z][a-z0-9-]{0,20}\\.example\\.org",
        mac in "([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}",
        uuid in "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        key in "[0-9a-f]{32}",
        product in "[a-z][a-z0-9-]{0,15}",
        template in "(|install|sub/install-[a-z]{1,5})",
        service in "https://[a-z]{1,10}\\.example\\.org:4447",
        append in proptest::collection::vec(text("[a-z]{1,8}=[ -~]{0,8}"), 0..3),
        properties in proptest::collection::btree_map("[a-z]{1,8}", text("[ -~]{0,20}"), 0..4),
        boot_mode in 0i32..4,
        revision in any::<u64>(),
    ) -> proto::ClientBundle {
        bundle(Parts { id, mac, uuid, key, product, template, service, append, properties, boot_mode, revision })
    }
}

/// Template lines: plain text, property placeholders and kernel lines of
/// every loader, without control characters other than tab.
fn template() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        "[ -~\t]{0,40}",
        "[ a-z]{0,10}%[a-z]{1,8}%[ -~]{0,10}",
        "  append [ -~]{0,30}",
        "append=\"[ -$&-~]{0,20}\"",
        "  linux [ -~]{1,30}",
        "kernel [ -~]{1,30}",
    ];
    (any::<bool>(), proptest::collection::vec(line, 0..12)).prop_map(|(ipxe, lines)| {
        let mut text = if ipxe {
            "#!ipxe\n".to_owned()
        } else {
            String::new()
        };
        for l in lines {
            text.push_str(&l);
            text.push('\n');
        }
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any wire bundle converts or is refused with a short message naming a
    /// field; one that converts comes back the same through the wire.
    #[test]
    fn bundle_conversion_is_total_and_round_trips(wire in wire_bundle()) {
        match ClientBundle::try_from(wire) {
            Ok(bundle) => {
                let back = ClientBundle::try_from(proto::ClientBundle::from(&bundle)).unwrap();
                prop_assert_eq!(back, bundle);
            }
            Err(e) => {
                prop_assert!(!e.field.is_empty());
                prop_assert!(e.to_string().len() < 1024, "{} bytes", e.to_string().len());
            }
        }
    }

    /// Rendering emits exactly the template's lines (a value cannot add
    /// one), no control character the template did not have, and a line
    /// that is neither a kernel line nor holds a placeholder unchanged.
    #[test]
    fn rendering_adds_no_line_and_no_control_character(wire in render_bundle(), template in template()) {
        // Only bundles the edge accepts are rendered; proptest fails the
        // test if too few are (so it cannot pass by rendering nothing).
        let bundle = ClientBundle::try_from(wire);
        prop_assume!(bundle.is_ok());
        let out = Renderer::new().render(&template, &bundle.unwrap());
        prop_assume!(out.is_ok());
        let out = out.unwrap();
        prop_assert_eq!(out.lines().count(), template.lines().count());
        prop_assert!(
            out.chars().all(|c| !c.is_control() || c == '\n' || c == '\t'),
            "control character in {:?}", out
        );
        for (t, o) in template.lines().zip(out.lines()) {
            let kernel = ["append", "linux", "kernel"].iter().any(|k| t.trim_start().starts_with(k));
            if !t.contains('%') && !kernel {
                prop_assert_eq!(o, t.trim_end());
            }
        }
    }

    /// A MAC in any accepted spelling parses to the same address, and its
    /// file name is a managed name that spells it again.
    #[test]
    fn mac_names_round_trip(octets in any::<[u8; 6]>(), upper in any::<bool>(), dash in any::<bool>()) {
        let sep = if dash { "-" } else { ":" };
        let text: Vec<String> = octets.iter().map(|o| if upper { format!("{o:02X}") } else { format!("{o:02x}") }).collect();
        let mac = Mac::parse(&text.join(sep), "mac").unwrap();
        prop_assert_eq!(Mac::parse(&mac.to_string(), "mac").unwrap(), mac);
        let name = mac.pxe_file_name();
        prop_assert!(is_pxe_file_name(&name));
        prop_assert_eq!(Mac::parse(&name[3..], "mac").unwrap(), mac);
    }

    /// A system UUID in any case parses to its lower-case form, which is a
    /// managed file name and parses to itself.
    #[test]
    fn uuid_names_round_trip(bytes in any::<[u8; 16]>(), upper in any::<bool>()) {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let text = format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]);
        let given = if upper { text.to_uppercase() } else { text.clone() };
        let uuid = SystemUuid::parse(&given, "uuid").unwrap();
        prop_assert_eq!(uuid.as_str(), text.as_str());
        prop_assert!(is_pxe_file_name(uuid.as_str()));
        prop_assert_eq!(SystemUuid::parse(uuid.as_str(), "uuid").unwrap(), uuid);
    }

    /// A name counts as a managed PXE file only in those canonical forms:
    /// a template or stray file can never be taken for a client's config.
    #[test]
    fn only_canonical_names_are_managed(name in "[0-9a-fA-F:.\\-]{0,40}|01-[0-9a-f-]{17}|[ -~]{0,40}") {
        if is_pxe_file_name(&name) && !name.starts_with(".pxeconf-tmp") {
            let as_mac = name.strip_prefix("01-").map(|m| Mac::parse(m, "m").map(|m| m.pxe_file_name()));
            let as_uuid = SystemUuid::parse(&name, "u").map(|u| u.as_str().to_owned());
            prop_assert!(
                matches!(&as_mac, Some(Ok(n)) if *n == name) || matches!(&as_uuid, Ok(n) if *n == name),
                "{:?} is managed but no canonical MAC or UUID name", name
            );
        }
    }
}
