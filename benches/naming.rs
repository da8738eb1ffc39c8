//! Naming: the per-client validation and file-name work a depot does for
//! every config — parsing an FQDN, a MAC and a system UUID, turning the MAC
//! into its PXELINUX file name, and recognising managed file names (which
//! the depot does for every inotify event and every stale-file check).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use pxeconf::domain::{Fqdn, Mac, SystemUuid, TemplateName, is_pxe_file_name};

fn bench(c: &mut Criterion) {
    c.bench_function("parse FQDN", |b| {
        b.iter(|| Fqdn::parse(black_box("client000042.example.org"), "id").unwrap())
    });
    c.bench_function("parse MAC", |b| {
        b.iter(|| Mac::parse(black_box("02:50:00:00:00:2a"), "hardware_address").unwrap())
    });
    let mac = Mac::parse("02:50:00:00:00:2a", "hardware_address").unwrap();
    c.bench_function("MAC → PXE file name", |b| {
        b.iter(|| black_box(&mac).pxe_file_name())
    });
    c.bench_function("parse system UUID", |b| {
        b.iter(|| {
            SystemUuid::parse(black_box("5a1e0000-0000-4000-8000-00000000002a"), "uuid").unwrap()
        })
    });
    c.bench_function("parse template name", |b| {
        b.iter(|| TemplateName::parse(black_box("install-grub-x64"), "template").unwrap())
    });
    let names = [
        "01-02-50-00-00-00-2a",
        "5a1e0000-0000-4000-8000-00000000002a",
        ".pxeconf-tmp-123",
        "install-grub-x64",
    ];
    c.bench_function("is_pxe_file_name (4 names)", |b| {
        b.iter(|| {
            for n in names {
                black_box(is_pxe_file_name(black_box(n)));
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
