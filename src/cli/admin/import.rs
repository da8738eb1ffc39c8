//! `pxeconf import FILE…`: an inventory file (TOML or JSON, sections and
//! field names as in the Admin API), declared once as a table of sections
//! and sent section by section, in dependency order; or, with `--dry-run`,
//! through `ImportInventory` in one transaction that is rolled back. An opsi
//! dump (`--format opsi`, or detected) goes to `super::opsi`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::connect::Connection;
use super::opsi::{Target, import_opsi, send_inventory};
use crate::cli::error::CliError;
use crate::cli::opsi::{DepotEndpoints, is_opsi_dump};
use crate::proto;

/// What `pxeconf import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An opsi dump if the input looks like one, else an inventory file.
    Auto,
    /// A pxeconf inventory file (`.toml` or `.json`).
    Inventory,
    /// opsi's JSON object dumps (`*_getObjects` answers).
    Opsi,
}

/// `pxeconf import FILE…`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// An inventory file (`.toml` or `.json`, sections and field names as in the Admin
    /// API, see examples/inventory.toml), or opsi JSON dumps: files (one array of mixed
    /// objects, or one file per `*_getObjects` call, or JSON-RPC answers) or directories
    /// of them.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// What the files are.
    #[arg(long, value_enum, default_value = "auto")]
    pub format: Format,
    /// opsi: each depot's gRPC URL, `{id}` standing for its FQDN (and `{host}` for its
    /// first label), e.g. 'https://{id}:50051'.
    #[arg(long, value_name = "TEMPLATE")]
    pub depot_endpoint: Option<String>,
    /// opsi: a TOML or JSON file of depot id = gRPC URL; wins over --depot-endpoint.
    #[arg(long, value_name = "FILE")]
    pub depot_map: Option<PathBuf>,
    /// Report what would change (in one transaction that is rolled back), change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How to reach the configserver.
    #[command(flatten)]
    pub connection: Connection,
}

/// Declares the inventory: per section, an entry type with the proto message's
/// field names (each optional, defaulting to empty) and its conversion to the
/// message. The configserver writes the sections of an import in its own
/// dependency order, the one declared here.
macro_rules! inventory {
    ($(
        $section:ident: $entry:ident => $message:ident {
            $($field:ident: $ty:ty),* $(,)?
        };
    )*) => {
        /// An inventory file.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        struct Inventory {
            $($section: Vec<$entry>,)*
        }

        $(
            /// One entry of its section, as in the file.
            #[derive(Debug, Default, Deserialize)]
            #[serde(deny_unknown_fields, default)]
            struct $entry {
                $($field: $ty,)*
            }

            // Every field is named, so a field added to the message does not
            // compile until the inventory can carry it.
            impl From<$entry> for proto::$message {
                fn from(entry: $entry) -> Self {
                    proto::$message { $($field: entry.$field,)* }
                }
            }
        )*

        impl Inventory {
            /// The whole inventory as one import (its sections are named alike).
            fn into_import(self) -> proto::ImportInventoryRequest {
                proto::ImportInventoryRequest {
                    $($section: self.$section.into_iter().map(proto::$message::from).collect(),)*
                    dry_run: false,
                }
            }
        }
    };
}

// Dependencies first: a depot before the products on it, a client before its
// states, and action requests last, once everything a push needs is there.
inventory! {
    configs: ConfigEntry => Config {
        id: String, default_values: Vec<String>, description: String,
    };
    depots: DepotEntry => DepotInfo {
        id: String, endpoint: String, host_key: String, description: String,
    };
    products: ProductEntry => Product {
        id: String, product_version: String, package_version: String, pxe_config_template: String,
    };
    product_on_depots: ProductOnDepotEntry => ProductOnDepot {
        depot_id: String, product_id: String, product_version: String, package_version: String,
    };
    clients: ClientEntry => Host {
        id: String, hardware_address: String, system_uuid: String, ip_address: String,
        opsi_host_key: String,
    };
    config_states: ConfigStateEntry => ConfigState {
        object_id: String, config_id: String, values: Vec<String>,
    };
    product_property_states: PropertyStateEntry => ProductPropertyState {
        object_id: String, product_id: String, property_id: String, values: Vec<String>,
    };
    action_requests: ActionEntry => ActionRequest {
        client_id: String, product_id: String, action_request: String,
    };
}

/// Reads an inventory, TOML or JSON by the file's extension.
fn read_inventory(path: &Path) -> Result<Inventory, CliError> {
    let name = path.display();
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let json = match extension.as_deref() {
        Some("json") => true,
        Some("toml") => false,
        _ => return Err(format!("{name}: an inventory is a .toml or a .json file").into()),
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
    if json {
        return serde_json::from_str(&text).map_err(|e| format!("{name}: {e}").into());
    }
    toml::from_str(&text).map_err(|e| {
        // toml's own rendering spans several lines; keep the message, name the place.
        let place = e.span().map(|span| {
            let (line, column) = crate::config::line_and_column(&text, span.start);
            format!(" at line {line} column {column}")
        });
        format!(
            "{name}: {}{}",
            e.message().trim(),
            place.unwrap_or_default()
        )
        .into()
    })
}

/// Whether the files are an opsi dump: as `--format` says, else by a look.
fn is_opsi(args: &ImportArgs) -> Result<bool, CliError> {
    Ok(match args.format {
        Format::Opsi => true,
        Format::Inventory => false,
        // Several files or a directory can only be a dump; one file is looked at.
        Format::Auto => match args.files.as_slice() {
            [file] => is_opsi_dump(file)?,
            _ => true,
        },
    })
}

/// `pxeconf import FILE…`: an opsi dump or an inventory file, each in one
/// transaction (with `--dry-run`: rolled back), then what changed — a bad
/// item fails the whole import, so nothing is half imported.
pub async fn import(args: ImportArgs) -> Result<(), CliError> {
    let target = Target {
        files: &args.files,
        dry_run: args.dry_run,
        connection: &args.connection,
    };
    if is_opsi(&args)? {
        let endpoints =
            DepotEndpoints::new(args.depot_endpoint.clone(), args.depot_map.as_deref())?;
        return import_opsi(&target, &endpoints).await;
    }
    let [file] = args.files.as_slice() else {
        return Err(
            "an inventory is one file (several files are read as opsi dumps: --format opsi)".into(),
        );
    };
    if args.depot_endpoint.is_some() || args.depot_map.is_some() {
        return Err("--depot-endpoint and --depot-map are for opsi dumps (--format opsi)".into());
    }
    let inventory = read_inventory(file)?;
    let mut admin = args.connection.connect().await?;
    send_inventory(&mut admin, &target, inventory.into_import(), None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_errors_name_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[[clients]]\nid = \"a.example.org\"\nmac = \"x\"\n").unwrap();
        let err = read_inventory(&path).unwrap_err().to_string();
        assert!(err.contains("unknown field `mac`"), "{err}");
        assert!(err.ends_with("at line 3 column 1"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
