//! The public contract (`proto/`) stays compatible: buf lint (STANDARD and
//! COMMENTS, with only the exceptions buf.yaml lists) and buf breaking
//! against the committed baseline of the released contract; and, because buf
//! compares request and response types by name, a structural check of our
//! own that every RPC of the baseline still takes and returns the same wire
//! shape after the per-RPC message renames.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;
use prost_types::{
    DescriptorProto, FileDescriptorProto, FileDescriptorSet, field_descriptor_proto,
};

use crate::common::have_tool;

/// `proto/` in the source tree.
fn proto_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("proto")
}

/// The one committed baseline image in `proto/baseline/`.
fn baseline_path() -> PathBuf {
    let dir = proto_dir().join("baseline");
    let images: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("proto/baseline")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "binpb"))
        .collect();
    assert_eq!(images.len(), 1, "exactly one baseline image: {images:?}");
    images.into_iter().next().unwrap()
}

/// Runs buf in `dir` with `args`; (success, stdout + stderr).
fn buf(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("buf")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run buf");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn buf_lint_and_breaking_pass_against_the_baseline() {
    if !have_tool("buf", "checking the proto contract") {
        return;
    }
    let (ok, out) = buf(&proto_dir(), &["lint"]);
    assert!(ok, "buf lint:\n{out}");
    let baseline = baseline_path();
    let (ok, out) = buf(
        &proto_dir(),
        &["breaking", "--against", baseline.to_str().unwrap()],
    );
    assert!(ok, "buf breaking:\n{out}");
}

#[test]
fn lifting_the_listed_exceptions_finds_exactly_them() {
    if !have_tool("buf", "checking the proto contract") {
        return;
    }
    // The same rules without buf.yaml's `except` and `ignore_only` (the
    // vendored `google/` stays ignored: Google's style, not ours).
    let bare = r#"{"version":"v2","lint":{"use":["STANDARD","COMMENTS"],"ignore":["google"]}}"#;
    let (ok, out) = buf(
        &proto_dir(),
        &["lint", "--error-format", "json", "--config", bare],
    );
    assert!(!ok, "the exceptions are needed, so bare lint fails:\n{out}");
    let mut found: BTreeMap<String, usize> = BTreeMap::new();
    for line in out.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = format!(
            "{} {}",
            v["type"].as_str().unwrap(),
            v["path"].as_str().unwrap()
        );
        *found.entry(key).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = [
        // Depot, ConfigServer, Admin keep their names.
        ("SERVICE_SUFFIX pxeconf/v1/admin.proto", 1),
        ("SERVICE_SUFFIX pxeconf/v1/configserver.proto", 1),
        ("SERVICE_SUFFIX pxeconf/v1/depot.proto", 1),
        // SetPxeConfig(ClientBundle).
        ("RPC_REQUEST_STANDARD_NAME pxeconf/v1/depot.proto", 1),
        ("RPC_REQUEST_RESPONSE_UNIQUE pxeconf/v1/depot.proto", 1),
        // GetClientBundle and ListPendingBundles return the ClientBundle.
        (
            "RPC_RESPONSE_STANDARD_NAME pxeconf/v1/configserver.proto",
            2,
        ),
        (
            "RPC_REQUEST_RESPONSE_UNIQUE pxeconf/v1/configserver.proto",
            2,
        ),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    assert_eq!(found, expected, "{out}");
}

#[test]
fn buf_breaking_fails_on_a_renumbered_field() {
    if !have_tool("buf", "checking the proto contract") {
        return;
    }
    // A copy of proto/ with one field renumbered must fail the check: the
    // check can fail.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("proto");
    copy_tree(&proto_dir(), &copy);
    let depot = copy.join("pxeconf/v1/depot.proto");
    let text = std::fs::read_to_string(&depot).unwrap();
    assert!(text.contains("bool removed = 1;"));
    std::fs::write(
        &depot,
        text.replace("bool removed = 1;", "bool removed = 2;"),
    )
    .unwrap();
    let baseline = baseline_path();
    let (ok, out) = buf(
        &copy,
        &["breaking", "--against", baseline.to_str().unwrap()],
    );
    assert!(!ok, "a renumbered field passed buf breaking:\n{out}");
    assert!(out.contains("RemovePxeConfigResponse"), "{out}");
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Messages of a descriptor set by full name (`.pxeconf.v1.Host`).
fn messages(files: &[FileDescriptorProto]) -> HashMap<String, DescriptorProto> {
    let mut out = HashMap::new();
    fn walk(prefix: &str, m: &DescriptorProto, out: &mut HashMap<String, DescriptorProto>) {
        let name = format!("{prefix}.{}", m.name());
        for nested in &m.nested_type {
            walk(&name, nested, out);
        }
        out.insert(name, m.clone());
    }
    for f in files {
        for m in &f.message_type {
            walk(&format!(".{}", f.package()), m, &mut out);
        }
    }
    out
}

/// Why message `new` (now) cannot read and write what `old` (baseline) did,
/// if it cannot: every old field must be there with the same number, name
/// (JSON), label and type; message-typed fields compared the same way,
/// recursively. New fields are fine.
fn wire_differences(
    old: &str,
    new: &str,
    before: &HashMap<String, DescriptorProto>,
    now: &HashMap<String, DescriptorProto>,
    seen: &mut BTreeSet<(String, String)>,
) -> Vec<String> {
    if !seen.insert((old.to_owned(), new.to_owned())) {
        return vec![];
    }
    let (Some(o), Some(n)) = (before.get(old), now.get(new)) else {
        return vec![format!("{old} → {new}: message missing")];
    };
    let mut problems = vec![];
    for of in &o.field {
        let Some(nf) = n.field.iter().find(|f| f.number() == of.number()) else {
            problems.push(format!("{new}: field {} ({}) gone", of.number(), of.name()));
            continue;
        };
        let same = of.name() == nf.name()
            && of.json_name() == nf.json_name()
            && of.label() == nf.label()
            && of.r#type() == nf.r#type();
        if !same {
            problems.push(format!(
                "{new}.{}: changed from {of:?} to {nf:?}",
                nf.name()
            ));
        } else if of.r#type() == field_descriptor_proto::Type::Message {
            problems.extend(wire_differences(
                of.type_name(),
                nf.type_name(),
                before,
                now,
                seen,
            ));
        } else if of.r#type() == field_descriptor_proto::Type::Enum
            && of.type_name() != nf.type_name()
        {
            problems.push(format!("{new}.{}: enum type changed", nf.name()));
        }
    }
    problems
}

/// Every RPC of `before` against `now`: its problems, empty if none.
fn rpc_wire_differences(
    before: &[FileDescriptorProto],
    now: &[FileDescriptorProto],
) -> Vec<String> {
    let (old_msgs, new_msgs) = (messages(before), messages(now));
    let mut problems = vec![];
    for file in before {
        for service in &file.service {
            let new_service = now
                .iter()
                .flat_map(|f| f.service.iter().map(move |s| (f, s)))
                .find(|(f, s)| f.package() == file.package() && s.name() == service.name());
            let Some((_, new_service)) = new_service else {
                problems.push(format!("service {} gone", service.name()));
                continue;
            };
            for rpc in &service.method {
                let Some(new_rpc) = new_service.method.iter().find(|m| m.name() == rpc.name())
                else {
                    problems.push(format!("rpc {}.{} gone", service.name(), rpc.name()));
                    continue;
                };
                let mut seen = BTreeSet::new();
                for (o, n) in [
                    (rpc.input_type(), new_rpc.input_type()),
                    (rpc.output_type(), new_rpc.output_type()),
                ] {
                    problems.extend(
                        wire_differences(o, n, &old_msgs, &new_msgs, &mut seen)
                            .into_iter()
                            .map(|p| format!("{}.{}: {p}", service.name(), rpc.name())),
                    );
                }
            }
        }
    }
    problems
}

/// The baseline image's files: a buf image is wire-compatible with a
/// `FileDescriptorSet` (buf's own extras are unknown fields to prost).
fn baseline_files() -> Vec<FileDescriptorProto> {
    let bytes = std::fs::read(baseline_path()).unwrap();
    FileDescriptorSet::decode(bytes.as_slice()).unwrap().file
}

fn current_files() -> Vec<FileDescriptorProto> {
    FileDescriptorSet::decode(pxeconf::proto::FILE_DESCRIPTOR_SET)
        .unwrap()
        .file
}

#[test]
fn every_released_rpc_keeps_its_wire_shape() {
    let before = baseline_files();
    let now = current_files();
    let rpcs: usize = before
        .iter()
        .flat_map(|f| &f.service)
        .map(|s| s.method.len())
        .sum();
    assert!(rpcs >= 30, "baseline has {rpcs} RPCs");
    let problems = rpc_wire_differences(&before, &now);
    assert!(problems.is_empty(), "{problems:#?}");

    // The check can fail: renumber one field of a per-RPC message, retype
    // another inside a nested message.
    let mut broken = now.clone();
    let admin = broken
        .iter_mut()
        .find(|f| f.name() == "pxeconf/v1/admin.proto")
        .unwrap();
    let write = admin
        .message_type
        .iter_mut()
        .find(|m| m.name() == "SetActionRequestsResponse")
        .unwrap();
    write.field[1].number = Some(7);
    let status = admin
        .message_type
        .iter_mut()
        .find(|m| m.name() == "Delivery")
        .unwrap();
    status.field[3].r#type = Some(field_descriptor_proto::Type::Int64 as i32);
    let problems = rpc_wire_differences(&before, &broken);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("SetActionRequests") && p.contains("pushes_queued")),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("GetClientStatus") && p.contains("Delivery.revision")),
        "{problems:#?}"
    );
}
