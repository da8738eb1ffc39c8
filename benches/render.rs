//! The depot's CPU work per client: validating a wire bundle, rendering a
//! template (with the password hash cached, as in a bulk), and the hash
//! itself, which the cache saves for all but the first client.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use pxeconf::depot::crypt::sha512_crypt;
use pxeconf::depot::render::Renderer;
use pxeconf::domain::ClientBundle;
use pxeconf::proto;

const TEMPLATE: &str = include_str!("../contrib/templates/install");
const GRUB: &str = include_str!("../contrib/templates/install-grub-x64");
const IPXE: &str = include_str!("../contrib/templates/install-ipxe");

fn wire() -> proto::ClientBundle {
    proto::ClientBundle {
        host: Some(proto::Host {
            id: "client000042.example.org".into(),
            hardware_address: "02:50:00:00:00:2a".into(),
            system_uuid: "5a1e0000-0000-4000-8000-00000000002a".into(),
            ip_address: "10.0.0.42".into(),
            opsi_host_key: "0123456789abcdef0123456789abcdef".into(),
        }),
        product_on_client: Some(proto::ProductOnClient {
            action_request: "setup".into(),
            ..Default::default()
        }),
        product_on_depot: None,
        product: Some(proto::Product {
            id: "win10-x64".into(),
            product_version: "10.0.19045".into(),
            package_version: "2".into(),
            pxe_config_template: String::new(),
        }),
        depot_id: "depot1.example.org".into(),
        service_address: "https://config.example.org:4447".into(),
        boot_mode: proto::BootMode::Bios as i32,
        bootimage_append: vec![
            "nomodeset".into(),
            "lang=de".into(),
            "bootimagerootpassword=linux123".into(),
        ],
        product_property_states: [("lang".to_string(), "de_DE".to_string())].into(),
        modules: Some(proto::Modules {
            uefi: true,
            secureboot: true,
        }),
        revision: 7,
        epoch: Default::default(),
    }
}

fn bench(c: &mut Criterion) {
    let bundle = ClientBundle::try_from(wire()).unwrap();
    c.bench_function("validate wire bundle", |b| {
        b.iter(|| ClientBundle::try_from(black_box(wire())).unwrap())
    });
    let renderer = Renderer::new();
    c.bench_function("render pxelinux (hash cached)", |b| {
        b.iter(|| {
            renderer
                .render(black_box(TEMPLATE), black_box(&bundle))
                .unwrap()
        })
    });
    for (name, template) in [
        ("render grub (hash cached)", GRUB),
        ("render iPXE (hash cached)", IPXE),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                renderer
                    .render(black_box(template), black_box(&bundle))
                    .unwrap()
            })
        });
    }
    c.bench_function("sha512-crypt, 5000 rounds (uncached)", |b| {
        b.iter(|| sha512_crypt(black_box("linux123"), "0123456789abcdef").unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
