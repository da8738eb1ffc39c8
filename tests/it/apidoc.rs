//! docs/API.md is generated from the proto comments (the descriptor set the
//! build compiles, with its source info) and must be current: this test
//! renders it and compares. After changing a `.proto` file:
//!
//! ```sh
//! UPDATE_API_DOC=1 cargo test --test it api_doc
//! ```
//!
//! It also fails when a service, RPC, message, field, enum or enum value has
//! no comment (buf lint's COMMENTS rules say the same, where buf is there).

use std::collections::HashMap;
use std::fmt::Write;
use std::path::Path;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
    FileDescriptorSet, ServiceDescriptorProto,
};

/// The comment of each element of one file, by source path.
struct Comments(HashMap<Vec<i32>, String>);

impl Comments {
    fn of(file: &FileDescriptorProto) -> Self {
        let mut map = HashMap::new();
        for loc in file.source_code_info.iter().flat_map(|i| &i.location) {
            let text = loc
                .leading_comments
                .as_deref()
                .or(loc.trailing_comments.as_deref())
                .unwrap_or("");
            let lines: Vec<&str> = text.lines().map(str::trim).collect();
            let text = lines.join("\n").trim().to_owned();
            if !text.is_empty() {
                map.insert(loc.path.clone(), text);
            }
        }
        Self(map)
    }

    /// The comment at `path`, or `None`.
    fn get(&self, path: &[i32]) -> Option<&str> {
        self.0.get(path).map(String::as_str)
    }

    /// The file's own comment: the detached comment before `syntax`.
    fn file(file: &FileDescriptorProto) -> String {
        file.source_code_info
            .iter()
            .flat_map(|i| &i.location)
            .find(|l| l.path == [12])
            .and_then(|l| {
                l.leading_comments
                    .as_ref()
                    .or(l.leading_detached_comments.first())
            })
            .map(|c| c.lines().map(str::trim).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }
}

/// A comment on one table line.
fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// A link to a message or enum of ours, or the type name for others.
fn type_link(full: &str) -> String {
    match full.strip_prefix(".pxeconf.v1.") {
        Some(name) => format!("[`{name}`](#{})", name.to_lowercase()),
        None => format!("`{}`", full.trim_start_matches('.')),
    }
}

fn scalar(t: Type) -> &'static str {
    match t {
        Type::Double => "double",
        Type::Float => "float",
        Type::Int64 => "int64",
        Type::Uint64 => "uint64",
        Type::Int32 => "int32",
        Type::Fixed64 => "fixed64",
        Type::Fixed32 => "fixed32",
        Type::Bool => "bool",
        Type::String => "string",
        Type::Bytes => "bytes",
        Type::Uint32 => "uint32",
        Type::Sfixed32 => "sfixed32",
        Type::Sfixed64 => "sfixed64",
        Type::Sint32 => "sint32",
        Type::Sint64 => "sint64",
        Type::Group | Type::Message | Type::Enum => "",
    }
}

/// A field's type as the proto file writes it, with links.
fn field_type(field: &FieldDescriptorProto, message: &DescriptorProto) -> String {
    let base = |f: &FieldDescriptorProto| match f.r#type() {
        Type::Message | Type::Enum => type_link(f.type_name()),
        t => format!("`{}`", scalar(t)),
    };
    if field.label() == Label::Repeated {
        let entry = field.type_name().rsplit('.').next().unwrap_or("");
        if let Some(map) = message
            .nested_type
            .iter()
            .find(|n| n.name() == entry && n.options.as_ref().is_some_and(|o| o.map_entry()))
        {
            return format!("map<{}, {}>", base(&map.field[0]), base(&map.field[1]));
        }
        return format!("repeated {}", base(field));
    }
    base(field)
}

/// Renders the whole reference; `missing` collects undocumented elements.
fn render(files: &[FileDescriptorProto], missing: &mut Vec<String>) -> String {
    let mut out = String::new();
    out.push_str(
        "# pxeconf API reference\n\n\
         <!-- Generated from proto/pxeconf/v1/*.proto by tests/it/apidoc.rs; do not edit.\n     \
         After changing a .proto file: UPDATE_API_DOC=1 cargo test --test it api_doc -->\n\n\
         Package `pxeconf.v1`, served over gRPC with reflection (v1 and v1alpha). Errors carry\n\
         `google.rpc` details (`ErrorInfo` with domain `pxeconf` and a stable reason, and\n\
         `BadRequest`, `PreconditionFailure` or `RetryInfo` where they apply).\n\n",
    );
    for file in files {
        let _ = writeln!(out, "- [{}](#{})", file.name(), anchor(file.name()));
    }
    out.push_str("- [Error reasons](#error-reasons)\n");
    for file in files {
        render_file(&mut out, file, missing);
    }
    render_reasons(&mut out);
    out
}

/// `InvalidArgument` → `INVALID_ARGUMENT`, as gRPC names its codes.
fn upper_snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The stable `ErrorInfo.reason`s, from `pxeconf::status::Reason`.
fn render_reasons(out: &mut String) {
    out.push_str(
        "\n## Error reasons\n\n\
         Every error carries a `google.rpc.ErrorInfo` with domain `pxeconf` and one of these\n\
         reasons; programs match on the reason, never on the message. INVALID_ARGUMENT also\n\
         carries a `google.rpc.BadRequest` with one `FieldViolation` per bad field (a path such\n\
         as `clients[3].hardware_address`), FAILED_PRECONDITION a `PreconditionFailure`, and\n\
         UNAVAILABLE and RESOURCE_EXHAUSTED a `RetryInfo` with the delay the server wants.\n\n\
         | Reason | Code | Meaning |\n|---|---|---|\n",
    );
    for r in pxeconf::status::Reason::ALL {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            r.as_str(),
            upper_snake(&format!("{:?}", r.code())),
            one_line(r.description())
        );
    }
}

fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn render_file(out: &mut String, file: &FileDescriptorProto, missing: &mut Vec<String>) {
    let comments = Comments::of(file);
    let _ = write!(out, "\n## {}\n\n", file.name());
    let intro = Comments::file(file);
    if !intro.is_empty() {
        let _ = write!(out, "{intro}\n\n");
    }
    for (i, service) in file.service.iter().enumerate() {
        render_service(out, service, &comments, &[6, i as i32], missing);
    }
    for (i, message) in file.message_type.iter().enumerate() {
        render_message(out, message, &comments, &[4, i as i32], missing);
    }
    for (i, e) in file.enum_type.iter().enumerate() {
        render_enum(out, e, &comments, &[5, i as i32], missing);
    }
}

fn documented<'a>(
    comments: &'a Comments,
    path: &[i32],
    what: String,
    missing: &mut Vec<String>,
) -> &'a str {
    comments.get(path).unwrap_or_else(|| {
        missing.push(what);
        ""
    })
}

fn render_service(
    out: &mut String,
    service: &ServiceDescriptorProto,
    comments: &Comments,
    path: &[i32],
    missing: &mut Vec<String>,
) {
    let name = service.name();
    let doc = documented(comments, path, format!("service {name}"), missing);
    let _ = write!(out, "### {name}\n\nService `pxeconf.v1.{name}`. {doc}\n\n");
    out.push_str("| RPC | Request | Response | Description |\n|---|---|---|---|\n");
    for (j, rpc) in service.method.iter().enumerate() {
        let what = format!("rpc {name}.{}", rpc.name());
        let doc = documented(comments, &[path, &[2, j as i32]].concat(), what, missing);
        let stream = |s: bool| if s { "stream " } else { "" };
        let _ = writeln!(
            out,
            "| `{}` | {}{} | {}{} | {} |",
            rpc.name(),
            stream(rpc.client_streaming()),
            type_link(rpc.input_type()),
            stream(rpc.server_streaming()),
            type_link(rpc.output_type()),
            one_line(doc)
        );
    }
    out.push('\n');
}

fn render_message(
    out: &mut String,
    message: &DescriptorProto,
    comments: &Comments,
    path: &[i32],
    missing: &mut Vec<String>,
) {
    let name = message.name();
    let doc = documented(comments, path, format!("message {name}"), missing);
    let _ = write!(out, "### {name}\n\n{doc}\n\n");
    if message.field.is_empty() {
        out.push_str("No fields.\n\n");
        return;
    }
    out.push_str("| Field | Number | Type | Description |\n|---|---|---|---|\n");
    for (j, field) in message.field.iter().enumerate() {
        let what = format!("field {name}.{}", field.name());
        let doc = documented(comments, &[path, &[2, j as i32]].concat(), what, missing);
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            field.name(),
            field.number(),
            field_type(field, message),
            one_line(doc)
        );
    }
    out.push('\n');
}

fn render_enum(
    out: &mut String,
    e: &EnumDescriptorProto,
    comments: &Comments,
    path: &[i32],
    missing: &mut Vec<String>,
) {
    let name = e.name();
    let doc = documented(comments, path, format!("enum {name}"), missing);
    let _ = write!(out, "### {name}\n\n{doc}\n\n");
    out.push_str("| Value | Number | Description |\n|---|---|---|\n");
    for (j, value) in e.value.iter().enumerate() {
        let what = format!("enum value {name}.{}", value.name());
        let doc = documented(comments, &[path, &[2, j as i32]].concat(), what, missing);
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            value.name(),
            value.number(),
            one_line(doc)
        );
    }
    out.push('\n');
}

#[test]
fn api_doc_is_current_and_everything_is_documented() {
    let set = FileDescriptorSet::decode(pxeconf::proto::FILE_DESCRIPTOR_SET).unwrap();
    let ours: Vec<FileDescriptorProto> = set
        .file
        .into_iter()
        .filter(|f| f.package() == "pxeconf.v1")
        .collect();
    assert_eq!(ours.len(), 4, "the four files of proto/pxeconf/v1");
    let mut missing = vec![];
    let rendered = render(&ours, &mut missing);
    assert!(
        missing.is_empty(),
        "undocumented in proto/: {missing:#?}\nevery service, RPC, message, field and enum value needs a comment"
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/API.md");
    if std::env::var_os("UPDATE_API_DOC").is_some() {
        std::fs::write(&path, &rendered).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == rendered,
        "docs/API.md is stale: run `UPDATE_API_DOC=1 cargo test --test it api_doc` and commit it"
    );
}

#[test]
fn an_undocumented_field_is_found() {
    // The check can fail: drop one field's comment.
    let set = FileDescriptorSet::decode(pxeconf::proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut depot = set
        .file
        .into_iter()
        .find(|f| f.name() == "pxeconf/v1/depot.proto")
        .unwrap();
    let info = depot.source_code_info.as_mut().unwrap();
    let (m, _) = depot
        .message_type
        .iter()
        .enumerate()
        .map(|(i, m)| (i as i32, m))
        .find(|(_, m)| m.name() == "RemovePxeConfigResponse")
        .unwrap();
    info.location.retain(|l| l.path != [4, m, 2, 0]);
    let mut missing = vec![];
    render(&[depot], &mut missing);
    assert_eq!(missing, ["field RemovePxeConfigResponse.removed"]);
}
