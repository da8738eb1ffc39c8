//! Reading opsi dumps: a file with one array of mixed objects, one file per
//! `*_getObjects` call (or a directory of them), and any of these as the
//! JSON-RPC answer opsiconfd sends (`{"id": …, "result": [...], "error":
//! null}`, 1.0 or 2.0, or a batch of them), taken as it is.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::objects::Object;
use crate::cli::error::CliError;

/// Whether `value` looks like an opsi dump rather than a pxeconf inventory
/// (which is an object of sections): an array, or a JSON-RPC answer.
pub fn looks_like_opsi(value: &Value) -> bool {
    match value {
        Value::Array(_) => true,
        Value::Object(o) => is_envelope(o) || o.contains_key("type"),
        _ => false,
    }
}

/// A JSON-RPC answer: an `id` and a `result` or an `error`, no `type`.
fn is_envelope(o: &serde_json::Map<String, Value>) -> bool {
    !o.contains_key("type")
        && o.contains_key("id")
        && (o.contains_key("result") || o.contains_key("error"))
}

/// Whether `path`'s name ends in `.json`, in any case (`DUMP.JSON` from a
/// Windows share too).
fn json_named(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// The files behind `paths`: files as given, directories' `*.json` files
/// in name order.
fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CliError> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && json_named(p))
            .collect();
        if found.is_empty() {
            return Err(format!("{}: no .json files in this directory", path.display()).into());
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

/// Every opsi object in the dump files behind `paths`, in file order.
///
/// A file is parsed as it is read, and each object becomes an [`Object`]
/// as soon as it is complete: a dump of 400,000 objects (8,000 clients'
/// localboot product-on-clients, 174 MB) held 1.5 GB when the file's text
/// and its whole JSON tree were built first (docs/BENCHMARKS.md).
pub fn read_objects(paths: &[PathBuf]) -> Result<Vec<Object>, CliError> {
    let mut objects = Vec::new();
    for file in files(paths)? {
        let name = file.display().to_string();
        let reader = std::fs::File::open(&file).map_err(|e| format!("{name}: {e}"))?;
        let mut json = serde_json::Deserializer::from_reader(std::io::BufReader::new(reader));
        let mut failed = None;
        let seed = Objects {
            name: &name,
            out: &mut objects,
            failed: &mut failed,
            in_result: false,
        };
        let parsed =
            serde::de::DeserializeSeed::deserialize(seed, &mut json).and_then(|()| json.end());
        // Our own message, if one of ours stopped the parse; else the parser's.
        match (failed, parsed) {
            (Some(message), _) => return Err(message.into()),
            (None, Err(e)) => return Err(format!("{name}: {e}").into()),
            (None, Ok(())) => {}
        }
    }
    Ok(objects)
}

/// A file's objects, each converted as the parser completes it (only one
/// object's JSON tree at a time). `failed` holds a message of ours that
/// stopped the parse (the parser's error would add its position to it).
struct Objects<'a> {
    name: &'a str,
    out: &'a mut Vec<Object>,
    failed: &'a mut Option<String>,
    /// Inside a JSON-RPC answer's `result`: `null` is no objects.
    in_result: bool,
}

impl Objects<'_> {
    fn stop<E: serde::de::Error>(&mut self, message: String) -> E {
        *self.failed = Some(message);
        E::custom("stopped")
    }

    fn not_a_dump<E: serde::de::Error>(&mut self) -> E {
        let message = format!(
            "{}: not an opsi dump: expected an array of objects with a \"type\", or a JSON-RPC answer with one",
            self.name
        );
        self.stop(message)
    }

    /// Converts one object of the dump.
    fn push<E: serde::de::Error>(&mut self, value: Value) -> Result<(), E> {
        let i = self.out.len();
        match Object::from_json(value) {
            Ok(object) => {
                self.out.push(object);
                Ok(())
            }
            Err(e) => Err(self.stop(format!("{}: object {i}: {e}", self.name))),
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Objects<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Objects<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an opsi dump")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<Value>()? {
            match item {
                // A batch answer: a list of envelopes (each whole: one call's).
                Value::Object(o) if is_envelope(&o) => {
                    let values =
                        objects_of(Value::Object(o), self.name).map_err(|m| self.stop(m))?;
                    for value in values {
                        self.push(value)?;
                    }
                }
                Value::Object(o) => self.push(Value::Object(o))?,
                _ => return Err(self.not_a_dump()),
            }
        }
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(mut self) -> Result<(), E> {
        match self.in_result {
            true => Ok(()),
            false => Err(self.not_a_dump()),
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        if self.in_result {
            return Err(self.not_a_dump());
        }
        // A JSON-RPC answer, its `result` taken as it is parsed; or one object.
        let mut rest = serde_json::Map::new();
        let mut result = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "result" {
                result = true;
                map.next_value_seed(Objects {
                    name: self.name,
                    out: &mut *self.out,
                    failed: &mut *self.failed,
                    in_result: true,
                })?;
            } else {
                rest.insert(key, map.next_value()?);
            }
        }
        let envelope = !rest.contains_key("type") && rest.contains_key("id");
        if envelope && (result || rest.contains_key("error")) {
            match rest.remove("error").unwrap_or(Value::Null) {
                Value::Null => Ok(()),
                error => {
                    let message = (error.get("message").and_then(Value::as_str))
                        .map_or_else(|| error.to_string(), str::to_owned);
                    let name = self.name;
                    Err(self.stop(format!(
                        "{name}: the JSON-RPC answer is an error: {message}"
                    )))
                }
            }
        } else if rest.contains_key("type") && !result {
            self.push(Value::Object(rest))
        } else {
            Err(self.not_a_dump())
        }
    }

    fn visit_bool<E: serde::de::Error>(mut self, _: bool) -> Result<(), E> {
        Err(self.not_a_dump())
    }

    fn visit_i64<E: serde::de::Error>(mut self, _: i64) -> Result<(), E> {
        Err(self.not_a_dump())
    }

    fn visit_u64<E: serde::de::Error>(mut self, _: u64) -> Result<(), E> {
        Err(self.not_a_dump())
    }

    fn visit_f64<E: serde::de::Error>(mut self, _: f64) -> Result<(), E> {
        Err(self.not_a_dump())
    }

    fn visit_str<E: serde::de::Error>(mut self, _: &str) -> Result<(), E> {
        Err(self.not_a_dump())
    }
}

/// The object values of one file's JSON.
fn objects_of(value: Value, name: &str) -> Result<Vec<Value>, String> {
    let not_a_dump = || {
        format!(
            "{name}: not an opsi dump: expected an array of objects with a \"type\", or a JSON-RPC answer with one"
        )
    };
    match value {
        Value::Array(items) => {
            let mut objects = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    // A batch answer: a list of envelopes.
                    Value::Object(o) if is_envelope(&o) => {
                        objects.extend(objects_of(Value::Object(o), name)?)
                    }
                    Value::Object(o) => objects.push(Value::Object(o)),
                    _ => return Err(not_a_dump()),
                }
            }
            Ok(objects)
        }
        Value::Object(mut o) if is_envelope(&o) => {
            match o.remove("error").unwrap_or(Value::Null) {
                Value::Null => {}
                error => {
                    let message = error
                        .get("message")
                        .and_then(Value::as_str)
                        .map_or_else(|| error.to_string(), str::to_owned);
                    return Err(format!(
                        "{name}: the JSON-RPC answer is an error: {message}"
                    ));
                }
            }
            match o.remove("result").unwrap_or(Value::Null) {
                Value::Null => Ok(Vec::new()),
                result @ Value::Array(_) => objects_of(result, name),
                _ => Err(not_a_dump()),
            }
        }
        Value::Object(o) if o.contains_key("type") => Ok(vec![Value::Object(o)]),
        _ => Err(not_a_dump()),
    }
}

/// Whether `path` names a directory or a `.json` file that looks like an
/// opsi dump (used to detect the format). Only the top level is looked at
/// (no JSON tree is built: a dump may be hundreds of MB).
pub fn is_opsi_dump(path: &Path) -> Result<bool, CliError> {
    if path.is_dir() {
        return Ok(true);
    }
    if path.extension().is_some() && !json_named(path) {
        return Ok(false);
    }
    let name = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("{name}: {e}"))?;
    let reader = std::io::BufReader::new(file);
    let top: Top = serde_json::from_reader(reader).map_err(|e| format!("{name}: {e}"))?;
    Ok(match top {
        Top::Array => true,
        Top::Keys(keys) => {
            keys.contains("type")
                || (keys.contains("id") && (keys.contains("result") || keys.contains("error")))
        }
        Top::Other => false,
    })
}

/// A JSON document's top level: an array, an object's keys, or anything
/// else — its values skipped, not kept.
enum Top {
    Array,
    Keys(std::collections::HashSet<String>),
    Other,
}

impl<'de> serde::Deserialize<'de> for Top {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Top;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Top, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Top::Array)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
                let mut keys = std::collections::HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    keys.insert(key);
                }
                Ok(Top::Keys(keys))
            }
            fn visit_unit<E>(self) -> Result<Top, E> {
                Ok(Top::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Top, E> {
                Ok(Top::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Top, E> {
                Ok(Top::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Top, E> {
                Ok(Top::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Top, E> {
                Ok(Top::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<Top, E> {
                Ok(Top::Other)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn types(value: Value) -> Result<Vec<String>, String> {
        Ok(objects_of(value, "f")?
            .iter()
            .map(|o| o["type"].as_str().unwrap().to_owned())
            .collect())
    }

    #[test]
    fn arrays_envelopes_and_batches_are_taken_as_they_are() {
        let a = json!({"type": "OpsiClient", "id": "a.example.org"});
        let b = json!({"type": "NetbootProduct", "id": "p"});
        assert_eq!(
            types(json!([a, b])).unwrap(),
            ["OpsiClient", "NetbootProduct"]
        );
        let v1 = json!({"id": 1, "result": [a], "error": null});
        let v2 = json!({"id": 2, "result": [b], "jsonrpc": "2.0"});
        assert_eq!(types(v1.clone()).unwrap(), ["OpsiClient"]);
        assert_eq!(
            types(json!([v1, v2])).unwrap(),
            ["OpsiClient", "NetbootProduct"]
        );
        assert!(
            types(json!({"id": 3, "result": null, "error": null}))
                .unwrap()
                .is_empty()
        );
        let error = json!({"id": 1, "error": {"message": "Opsi authentication error", "class": "OpsiAuthenticationError", "details": null}, "result": null});
        assert_eq!(
            types(error).unwrap_err(),
            "f: the JSON-RPC answer is an error: Opsi authentication error"
        );
        for bad in [
            json!({"clients": []}),
            json!([1]),
            json!({"id": 1, "result": {"a": {}}}),
        ] {
            assert!(types(bad).unwrap_err().contains("not an opsi dump"));
        }
    }

    /// A file is read as its tree would be taken (the same objects, the
    /// same refusals), object by object.
    #[test]
    fn a_file_is_read_as_its_tree_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let read = |value: &Value| -> Result<Vec<String>, String> {
            let path = dir.path().join("dump.json");
            std::fs::write(&path, value.to_string()).unwrap();
            let objects = read_objects(&[path]).map_err(|e| e.to_string())?;
            Ok(objects.iter().map(|o| format!("{o:?}")).collect())
        };
        let a = json!({"type": "OpsiClient", "id": "a.example.org"});
        let b = json!({"type": "NetbootProduct", "id": "p"});
        let v1 = json!({"id": 1, "result": [a], "error": null});
        let v2 = json!({"jsonrpc": "2.0", "result": [b], "id": 2});
        for good in [
            json!([a, b]),
            v1.clone(),
            v2.clone(),
            json!([v1, v2]),
            json!({"id": 3, "result": null, "error": null}),
            a.clone(),
        ] {
            let tree: Vec<String> = objects_of(good.clone(), "f")
                .unwrap()
                .into_iter()
                .map(|v| format!("{:?}", Object::from_json(v).unwrap()))
                .collect();
            assert_eq!(read(&good).unwrap(), tree, "{good}");
        }
        let error =
            json!({"result": null, "id": 1, "error": {"message": "Opsi authentication error"}});
        assert!(
            read(&error)
                .unwrap_err()
                .ends_with("the JSON-RPC answer is an error: Opsi authentication error")
        );
        for bad in [
            json!({"clients": []}),
            json!([1]),
            json!({"id": 1, "result": {"a": {}}}),
            json!(7),
        ] {
            let e = read(&bad).unwrap_err();
            assert!(e.contains("not an opsi dump"), "{bad}: {e}");
        }
        let e = read(&json!([a, {"id": "x.example.org"}])).unwrap_err();
        assert!(e.contains("dump.json: object 1: "), "{e}");
        // The format is told from the top level alone.
        for (value, dump) in [
            (json!([a]), true),
            (json!({"id": 1, "result": []}), true),
            (a.clone(), true),
            (json!({"clients": [a]}), false),
        ] {
            let path = dir.path().join("top.json");
            std::fs::write(&path, value.to_string()).unwrap();
            assert_eq!(is_opsi_dump(&path).unwrap(), dump, "{value}");
        }
    }

    #[test]
    fn an_inventory_is_not_taken_for_a_dump() {
        assert!(!looks_like_opsi(&json!({"clients": [], "depots": []})));
        assert!(looks_like_opsi(&json!([])));
        assert!(looks_like_opsi(
            &json!({"id": 1, "result": [], "error": null})
        ));
    }

    #[test]
    fn a_directorys_json_files_are_found_in_any_case() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.json", "A.JSON", "c.Json", "notes.txt", "json"] {
            std::fs::write(dir.path().join(name), "[]").unwrap();
        }
        let found = files(&[dir.path().to_owned()]).unwrap();
        let names: Vec<_> = found
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["A.JSON", "b.json", "c.Json"]);
        let upper = dir.path().join("A.JSON");
        assert!(is_opsi_dump(&upper).unwrap());
        assert!(!is_opsi_dump(&dir.path().join("notes.txt")).unwrap());
    }
}
