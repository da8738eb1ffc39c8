//! Any text as a MAC, system UUID, FQDN or template name: parsing never
//! panics, errors stay short (64 characters of the value are quoted, each
//! escaped: well under 1 KiB, whatever the input's length), canonical forms
//! parse to themselves, and a template name is never a managed PXE file name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pxeconf::domain::{Fqdn, Mac, SystemUuid, TemplateName, is_pxe_file_name};

fuzz_target!(|text: &str| {
    if let Ok(mac) = Mac::parse(text, "mac") {
        assert_eq!(Mac::parse(&mac.to_string(), "mac").unwrap(), mac);
        let name = mac.pxe_file_name();
        assert!(is_pxe_file_name(&name));
        assert_eq!(Mac::parse(&name[3..], "mac").unwrap(), mac);
    }
    if let Ok(uuid) = SystemUuid::parse(text, "uuid") {
        assert!(is_pxe_file_name(uuid.as_str()));
        assert_eq!(SystemUuid::parse(uuid.as_str(), "uuid").unwrap(), uuid);
    }
    match Fqdn::parse(text, "fqdn") {
        Ok(fqdn) => assert_eq!(Fqdn::parse(fqdn.as_str(), "fqdn").unwrap(), fqdn),
        Err(e) => assert!(e.to_string().len() < 1024),
    }
    match TemplateName::parse(text, "template") {
        Ok(t) => {
            let base = t.as_str().rsplit('/').next().unwrap_or("");
            assert!(!is_pxe_file_name(base), "{text:?}");
            assert!(!t.as_str().split(['/', '\\']).any(|c| c == ".."));
        }
        Err(e) => assert!(e.to_string().len() < 1024),
    }
});
