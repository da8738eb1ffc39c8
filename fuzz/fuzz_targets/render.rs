//! A template and a wire bundle from the same bytes: rendering an accepted
//! bundle emits exactly the template's lines and no control character the
//! template did not have.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use pxeconf::depot::render::Renderer;
use pxeconf::domain::ClientBundle;
use pxeconf::proto;

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|b| *b == 0) else {
        return;
    };
    let template = String::from_utf8_lossy(&data[..split]);
    let Ok(wire) = proto::ClientBundle::decode(&data[split + 1..]) else {
        return;
    };
    let Ok(bundle) = ClientBundle::try_from(wire) else {
        return;
    };
    // One renderer per process: password hashes are memoized.
    static RENDERER: std::sync::LazyLock<Renderer> = std::sync::LazyLock::new(Renderer::new);
    let Ok(out) = RENDERER.render(&template, &bundle) else {
        return;
    };
    assert_eq!(out.lines().count(), template.lines().count(), "{template:?} → {out:?}");
    for c in out.chars().filter(|c| c.is_control() && *c != '\n') {
        assert!(template.contains(c), "{c:?} not in the template: {out:?}");
    }
});
