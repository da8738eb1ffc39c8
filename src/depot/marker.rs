//! Files that say whose they are: every PXE config the depot writes carries
//! one comment line naming pxeconf, the client and the revision (after
//! `#!ipxe` for iPXE; pxelinux, grub and elilo read `#` as a comment). When
//! the journal is lost, start-up removes only files with this line and
//! keeps the operator's. A read whose files cannot be deleted is defused
//! with a local-boot config in the same format, marked the same way.

use crate::domain::Fqdn;

/// How the marker line starts.
pub const MARKER: &str = "# pxeconf:";

/// The first line of iPXE scripts.
const IPXE: &str = "#!ipxe";

/// What a marker line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The client the file is for.
    pub fqdn: String,
    /// Its revision.
    pub revision: u64,
    /// A local-boot config (a read's files that could not be deleted,
    /// defused): it boots no action.
    pub local_boot: bool,
}

/// The PXE config formats, as far as their comment and local-boot syntax go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// pxelinux (the default).
    Pxelinux,
    /// iPXE: `#!ipxe` first.
    Ipxe,
    /// grub: `menuentry` or `linux` lines.
    Grub,
    /// elilo: `image=` sections.
    Elilo,
}

impl Format {
    /// The format of a rendered config.
    pub fn of(content: &str) -> Self {
        if content.starts_with(IPXE) {
            return Self::Ipxe;
        }
        let lines = || content.lines().map(str::trim_start);
        if lines().any(|l| l.starts_with("menuentry") || l.starts_with("linux ")) {
            Self::Grub
        } else if lines().any(|l| l.starts_with("image=") || l.starts_with("image ")) {
            Self::Elilo
        } else {
            Self::Pxelinux
        }
    }
}

/// Inserts `line` (ending in a newline) where a comment may go: after
/// `#!ipxe`, else first.
fn insert(content: &str, line: &str) -> String {
    let mut out = String::with_capacity(content.len() + line.len());
    match content.strip_prefix(IPXE) {
        Some(rest) => {
            let (first_rest, body) = rest.split_once('\n').unwrap_or((rest, ""));
            out.push_str(IPXE);
            out.push_str(first_rest);
            out.push('\n');
            out.push_str(line);
            out.push_str(body);
        }
        None => {
            out.push_str(line);
            out.push_str(content);
        }
    }
    out
}

/// `content` with the marker line for `fqdn` at `revision`.
pub fn stamp(content: &str, fqdn: &Fqdn, revision: u64) -> String {
    let line = format!(
        "{MARKER} one-time config for {fqdn} revision {revision}, deleted after its read\n"
    );
    insert(content, &line)
}

/// The marker in the first lines of `head`, if any.
pub fn find(head: &str) -> Option<Marker> {
    head.lines().take(2).find_map(|line| {
        let rest = line.strip_prefix(MARKER)?;
        let words: Vec<&str> = rest.split_whitespace().collect();
        let at = |w: &str| words.iter().position(|x| *x == w);
        let (named, local_boot) = match at("for") {
            Some(at) => (at, false),
            None => (at("by")?, true),
        };
        let fqdn = words.get(named + 1)?.trim_end_matches(',');
        let revision = words
            .get(at("revision")? + 1)?
            .trim_end_matches(',')
            .parse()
            .ok()?;
        Some(Marker {
            fqdn: fqdn.to_owned(),
            revision,
            local_boot,
        })
    })
}

/// A config in `format` that boots the local disk (as Cobbler's
/// `pxe_just_once` does): what a read config's files become when they
/// cannot be deleted.
pub fn local_boot(format: Format, fqdn: impl std::fmt::Display, revision: u64) -> String {
    let line = format!(
        "{MARKER} read by {fqdn} revision {revision}, boots locally until the depot can delete it\n"
    );
    let body = match format {
        Format::Ipxe => return format!("{IPXE}\n{line}exit\n"),
        Format::Pxelinux => "DEFAULT local\nLABEL local\n  LOCALBOOT 0\n",
        // `exit` leaves grub: the firmware boots the next device.
        Format::Grub => "set timeout=0\nexit\n",
        // elilo has no local boot: a config without an image makes it
        // return to the firmware, which boots the next device.
        Format::Elilo => "prompt\ntimeout=1\n",
    };
    insert(body, &line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fqdn() -> Fqdn {
        Fqdn::parse("pc1.example.org", "f").unwrap()
    }

    #[test]
    fn the_marker_goes_first_or_after_the_ipxe_line_and_reads_back() {
        let pxelinux = stamp("default opsi\n", &fqdn(), 42);
        assert!(pxelinux.starts_with("# pxeconf: one-time config for pc1.example.org revision 42"));
        assert!(pxelinux.ends_with("\ndefault opsi\n"));
        let ipxe = stamp("#!ipxe\nkernel x\nboot\n", &fqdn(), 7);
        let lines: Vec<&str> = ipxe.lines().collect();
        assert_eq!(lines[0], "#!ipxe");
        assert!(lines[1].starts_with(MARKER), "{ipxe}");
        assert_eq!(&lines[2..], ["kernel x", "boot"]);
        for text in [&pxelinux, &ipxe] {
            let marker = find(text).unwrap();
            assert_eq!(marker.fqdn, "pc1.example.org");
            assert!(!marker.local_boot);
        }
        assert_eq!(find(&ipxe).unwrap().revision, 7);
        assert_eq!(find("default opsi\n# pxeconf: x\n"), None);
        assert_eq!(find("label install\n"), None);
    }

    #[test]
    fn local_boot_configs_follow_the_format_and_are_marked() {
        let grub = "set timeout=0\nmenuentry 'x' {\n  linux (pxe)/k\n}\n";
        let elilo = "image=install\n  label=opsi\n";
        let cases = [
            ("#!ipxe\nkernel k\n", Format::Ipxe, "exit"),
            (
                "default opsi\nlabel opsi\n  append x\n",
                Format::Pxelinux,
                "LOCALBOOT 0",
            ),
            (grub, Format::Grub, "exit"),
            (elilo, Format::Elilo, "timeout=1"),
        ];
        for (content, format, says) in cases {
            assert_eq!(Format::of(content), format, "{content}");
            let local = local_boot(format, fqdn(), 9);
            assert!(local.contains(says), "{local}");
            assert!(
                local.contains("read by pc1.example.org revision 9"),
                "{local}"
            );
            assert_eq!(find(&local).unwrap().revision, 9);
            assert!(find(&local).unwrap().local_boot);
            if format == Format::Ipxe {
                assert!(local.starts_with("#!ipxe\n"));
            }
        }
    }
}
