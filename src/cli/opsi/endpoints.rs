//! Where each depot's pxeconf depot listens: opsi has no such address. A
//! template (`https://{id}:50051`) or a small mapping file (TOML or JSON,
//! depot id → URL; it wins over the template).

use std::collections::BTreeMap;
use std::path::Path;

use crate::cli::error::CliError;

/// The gRPC endpoint of each depot.
#[derive(Debug, Clone, Default)]
pub struct DepotEndpoints {
    template: Option<String>,
    map: BTreeMap<String, String>,
}

/// A depot id as opsi writes it: lower case, no trailing dot.
fn canonical(id: &str) -> String {
    id.trim().trim_end_matches('.').to_ascii_lowercase()
}

impl DepotEndpoints {
    /// From `--depot-endpoint` (with `{id}`, the depot's FQDN, or `{host}`,
    /// its first label) and `--depot-map`.
    pub fn new(template: Option<String>, map_file: Option<&Path>) -> Result<Self, CliError> {
        if let Some(t) = &template
            && !t.contains("{id}")
            && !t.contains("{host}")
        {
            return Err(format!(
                "--depot-endpoint {t:?}: needs {{id}} or {{host}}, e.g. 'https://{{id}}:50051'"
            )
            .into());
        }
        let map = match map_file {
            None => BTreeMap::new(),
            Some(path) => read_map(path)?,
        };
        Ok(Self { template, map })
    }

    /// The endpoint of `depot_id`, if the map or the template gives one.
    pub fn endpoint(&self, depot_id: &str) -> Option<String> {
        let id = canonical(depot_id);
        if let Some(url) = self.map.get(&id) {
            return Some(url.clone());
        }
        let host = id.split('.').next().unwrap_or(&id).to_owned();
        self.template
            .as_ref()
            .map(|t| t.replace("{id}", &id).replace("{host}", &host))
    }
}

/// A mapping file: a table of depot id → URL, TOML or JSON by extension.
fn read_map(path: &Path) -> Result<BTreeMap<String, String>, CliError> {
    let name = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
    let map: BTreeMap<String, String> = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| format!("{name}: {e}"))?
    } else {
        toml::from_str(&text).map_err(|e| format!("{name}: {}", e.message().trim()))?
    };
    Ok(map
        .into_iter()
        .map(|(id, url)| (canonical(&id), url))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_wins_over_the_template() {
        let dir = tempfile::tempdir().unwrap();
        let map = dir.path().join("depots.toml");
        std::fs::write(
            &map,
            "\"Depot1.Example.org.\" = \"http://10.0.0.1:50051\"\n",
        )
        .unwrap();
        let e = DepotEndpoints::new(Some("https://{id}:50051".into()), Some(&map)).unwrap();
        assert_eq!(
            e.endpoint("depot1.example.org").unwrap(),
            "http://10.0.0.1:50051"
        );
        assert_eq!(
            e.endpoint("depot2.example.org").unwrap(),
            "https://depot2.example.org:50051"
        );
        let host = DepotEndpoints::new(Some("http://{host}.pxe:1".into()), None).unwrap();
        assert_eq!(host.endpoint("d3.example.org").unwrap(), "http://d3.pxe:1");
        assert_eq!(
            DepotEndpoints::new(None, Some(&map))
                .unwrap()
                .endpoint("x.example.org"),
            None
        );
        let err = DepotEndpoints::new(Some("https://depot:50051".into()), None).unwrap_err();
        assert!(err.to_string().contains("needs {id}"), "{err}");
        let json = dir.path().join("depots.json");
        std::fs::write(&json, r#"{"d.example.org": "http://d:1"}"#).unwrap();
        let e = DepotEndpoints::new(None, Some(&json)).unwrap();
        assert_eq!(e.endpoint("d.example.org").unwrap(), "http://d:1");
    }

    #[test]
    fn the_example_map_reads() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/opsi-depots.toml");
        let e = DepotEndpoints::new(None, Some(&example)).unwrap();
        assert_eq!(
            e.endpoint("depot-berlin.example.org").unwrap(),
            "https://10.1.0.5:50051"
        );
    }
}
