//! Any bytes as a wire `ClientBundle`: conversion never panics, an error is
//! short, and an accepted bundle comes back the same through the wire.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use pxeconf::domain::ClientBundle;
use pxeconf::proto;

fuzz_target!(|data: &[u8]| {
    let Ok(wire) = proto::ClientBundle::decode(data) else {
        return;
    };
    match ClientBundle::try_from(wire) {
        Ok(bundle) => {
            let back = ClientBundle::try_from(proto::ClientBundle::from(&bundle))
                .expect("a converted bundle converts again");
            assert_eq!(back, bundle);
        }
        Err(e) => assert!(e.to_string().len() < 1024, "{} bytes", e.to_string().len()),
    }
});
