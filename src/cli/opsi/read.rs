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
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json"))
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
pub fn read_objects(paths: &[PathBuf]) -> Result<Vec<Object>, CliError> {
    let mut objects = Vec::new();
    for file in files(paths)? {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(&file).map_err(|e| format!("{name}: {e}"))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| format!("{name}: {e}"))?;
        for (i, value) in objects_of(value, &name)?.into_iter().enumerate() {
            let object =
                Object::from_json(value).map_err(|e| format!("{name}: object {i}: {e}"))?;
            objects.push(object);
        }
    }
    Ok(objects)
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
/// opsi dump (used to detect the format).
pub fn is_opsi_dump(path: &Path) -> Result<bool, CliError> {
    if path.is_dir() {
        return Ok(true);
    }
    if path.extension().is_some_and(|e| e != "json") {
        return Ok(false);
    }
    let name = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| format!("{name}: {e}"))?;
    Ok(looks_like_opsi(&value))
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

    #[test]
    fn an_inventory_is_not_taken_for_a_dump() {
        assert!(!looks_like_opsi(&json!({"clients": [], "depots": []})));
        assert!(looks_like_opsi(&json!([])));
        assert!(looks_like_opsi(
            &json!({"id": 1, "result": [], "error": null})
        ));
    }
}
