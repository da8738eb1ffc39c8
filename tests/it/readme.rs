//! The README's grpcurl examples cover every RPC and work, in order, against
//! a live configserver and depots.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use pxeconf::cli::lab::{Lab, LabOptions};

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// Every `service/method` of the contract.
fn rpcs() -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for file in ["depot", "configserver", "admin"] {
        let text = read(&format!("proto/pxeconf/v1/{file}.proto"));
        let mut service = String::new();
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                service = rest.split_whitespace().next().unwrap().to_owned();
            } else if let Some(rest) = line.strip_prefix("rpc ") {
                let method = rest.split('(').next().unwrap().trim();
                all.insert(format!("pxeconf.v1.{service}/{method}"));
            }
        }
    }
    all
}

/// The `grpcurl` lines of the README's shell blocks, in order.
fn examples() -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_shell = false;
    for line in read("README.md").lines() {
        if line.starts_with("```") {
            in_shell = line == "```sh";
            continue;
        }
        if in_shell && line.starts_with("grpcurl ") {
            commands.push(line.to_owned());
        }
    }
    commands
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_has_a_working_grpcurl_example() {
    let examples = examples();
    let missing: Vec<String> = rpcs()
        .into_iter()
        .filter(|rpc| !examples.iter().any(|e| e.contains(&format!(" {rpc}"))))
        .collect();
    assert!(
        missing.is_empty(),
        "RPCs without a README example: {missing:?}"
    );
    if !crate::common::have_tool("grpcurl", "running the README's examples") {
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    // As the demo runs: TLS from a throwaway CA.
    let lab = Lab::start_tls(LabOptions {
        dir: dir.path().to_owned(),
        pxe_root: dir.path().to_owned(),
        depots: 2,
        legacy: 1,
        concurrency: 8,
        io_threads: 2,
        database: None,
    })
    .await
    .unwrap();
    lab.seed(0).await.unwrap();
    let key = |path: &Path| std::fs::read_to_string(path).unwrap();
    let ca = lab.pki.as_ref().unwrap().ca_file.display().to_string();
    let env = [
        ("CA", ca),
        ("CS", lab.configserver.to_string()),
        ("DEPOT", lab.depots[0].addr.to_string()),
        (
            "ADMIN",
            format!("authorization: Bearer {}", key(&lab.admin_key_file)),
        ),
        (
            "DEPOT_AUTH",
            format!("authorization: Bearer {}", key(&lab.depots[0].key_file)),
        ),
    ];
    for example in &examples {
        let (command, env) = (example.clone(), env.clone());
        let (ok, output) = tokio::task::spawn_blocking(move || {
            let out = Command::new("sh")
                .arg("-c")
                .arg(&command)
                .envs(env)
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr),
            )
        })
        .await
        .unwrap();
        assert!(ok, "README example failed:\n{example}\n{output}");
        if example.contains("Admin/GetClientStatus") {
            assert!(
                output.contains("\"depotId\": \"depot1.example.org\""),
                "{output}"
            );
        }
        if example.contains("Depot/SetPxeConfig ") || example.ends_with("Depot/SetPxeConfig") {
            assert!(output.contains("01-00-16-3e-99-00-01"), "{output}");
        }
        if example.ends_with("Depot/BatchSetPxeConfigs") {
            // One written, one refused on its own.
            assert!(output.contains("01-00-16-3e-99-00-02"), "{output}");
            assert!(output.contains("WRONG_DEPOT"), "{output}");
        }
    }
    lab.shutdown().await;
}

/// Runs grpcurl with `args`, off the runtime; (success, stdout + stderr).
async fn grpcurl(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("grpcurl").args(&args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_describe_works_on_the_configserver_and_on_a_depot() {
    if !crate::common::have_tool("grpcurl", "describing the servers by reflection") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabOptions {
        dir: dir.path().to_owned(),
        pxe_root: dir.path().to_owned(),
        depots: 1,
        legacy: 0,
        concurrency: 8,
        io_threads: 2,
        database: None,
    })
    .await
    .unwrap();
    let standard = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    let servers = [
        (
            lab.configserver,
            vec!["pxeconf.v1.ConfigServer", "pxeconf.v1.Admin"],
            vec!["pxeconf.v1.Depot"],
        ),
        (
            lab.depots[0].addr,
            vec!["pxeconf.v1.Depot"],
            vec!["pxeconf.v1.Admin", "pxeconf.v1.ConfigServer"],
        ),
    ];
    for (addr, own, others) in servers {
        // No symbol: every advertised service, the reflection services'
        // own descriptors included.
        let args = [
            "-plaintext".to_owned(),
            addr.to_string(),
            "describe".to_owned(),
        ];
        let (ok, output) = grpcurl(args.to_vec()).await;
        assert!(ok, "grpcurl -plaintext {addr} describe failed:\n{output}");
        for service in standard.iter().chain(&own) {
            assert!(
                output.contains(&format!("{service} is a service:")),
                "{service} missing in the describe of {addr}:\n{output}"
            );
        }
        for service in others {
            assert!(
                !output.contains(&format!("{service} is a service:")),
                "{addr} advertises {service}:\n{output}"
            );
        }
    }
    lab.shutdown().await;
}

/// Each `--flag` of `pxeconf <command> --help` with the default its text
/// names (`[default: X]`).
fn help_defaults(command: &str) -> Vec<(String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_pxeconf"))
        .args([command, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{command} --help");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut flag = String::new();
    let mut found = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("--") || line.starts_with('-') && line.contains(", --") {
            let at = line.find("--").unwrap();
            flag = line[at..].split([' ', '=']).next().unwrap().to_owned();
        }
        if let Some(start) = line.find("[default: ") {
            let rest = &line[start + "[default: ".len()..];
            let value = rest.split(']').next().unwrap().to_owned();
            found.push((flag.clone(), value));
        }
    }
    found
}

/// A default as the README and the contrib files write it, to compare with
/// the help's: without quotes, brackets and blanks, and up to a word that
/// only explains.
fn normalized(default: &str) -> String {
    let first = default
        .split(['(', ';'])
        .next()
        .unwrap()
        .trim()
        .trim_end_matches('.');
    first
        .chars()
        .filter(|c| !matches!(c, '`' | '"' | '[' | ']' | ' '))
        .collect()
}

/// The defaults that `--help` names are the ones the README's option tables
/// and the annotated files in contrib/ give (a default written in three
/// places drifted once: contrib said 32 pushes in flight, the code 128).
#[test]
fn the_readme_and_contrib_give_the_defaults_the_help_names() {
    let readme = read("README.md");
    let depot_help = help_defaults("depot");
    let (mut in_readme, mut in_contrib) = (0, 0);
    let mut wrong = Vec::new();
    for command in ["configserver", "depot"] {
        let contrib = read(&format!("contrib/{command}.toml"));
        let claimed = contrib_defaults(&contrib);
        for (flag, help) in help_defaults(command) {
            // A default that describes (the PXE directory, the depot's
            // group) is not a value to compare.
            if help.starts_with("the ") {
                continue;
            }
            match readme_default(&readme, command, &flag) {
                Some(Cell::Value(cell)) => {
                    let cell = normalized(&cell);
                    let help_value = normalized(&help);
                    in_readme += 1;
                    let explained = [format!("{help_value}:"), format!("none:{help_value},")];
                    if !(cell == help_value
                        || explained.iter().any(|e| cell.starts_with(e.as_str())))
                    {
                        wrong.push(format!("README {flag}: {cell:?}, help {help:?}"));
                    }
                }
                Some(Cell::AsForTheDepot) => {
                    in_readme += 1;
                    let depot = depot_help.iter().find(|(f, _)| *f == flag);
                    if depot.map(|(_, d)| d) != Some(&help) {
                        wrong.push(format!(
                            "README {command} {flag}: as for the depot ({depot:?}), help {help:?}"
                        ));
                    }
                }
                // Every default the help names has a row (a table reworded
                // out of this parser's reach must not pass unnoticed).
                None => wrong.push(format!("README {command} {flag}: no row found")),
            }
            let key = flag.trim_start_matches("--").replace('-', "_");
            for (_, text) in claimed.iter().filter(|(k, _)| *k == key) {
                if text.starts_with("the ") {
                    continue;
                }
                in_contrib += 1;
                let value = normalized(text.split(". ").next().unwrap());
                if value.replace(',', "") != normalized(&help).replace(',', "") {
                    wrong.push(format!(
                        "contrib/{command}.toml {key}: {value:?}, help {help:?}"
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "defaults disagree:\n{}", wrong.join("\n"));
    // Each of contrib's defaults found (a note reworded out of the parser's
    // reach must not pass unnoticed): change the count with the files.
    assert_eq!(in_contrib, 29, "contrib defaults compared");
    assert!(in_readme >= 30, "README defaults compared: {in_readme}");
}

/// What a README option table says of a flag's default.
enum Cell {
    /// The default column's text.
    Value(String),
    /// The configserver's row of flags it shares with the depot.
    AsForTheDepot,
}

/// The default the README gives `flag` of `pxeconf COMMAND`: in the
/// command's own table, else in the one both servers share.
fn readme_default(readme: &str, command: &str, flag: &str) -> Option<Cell> {
    let tables = [format!("| `pxeconf {command}` |"), "| flag |".to_owned()];
    tables.iter().find_map(|header| {
        readme
            .lines()
            .skip_while(|l| !l.starts_with(header.as_str()))
            .take_while(|l| l.starts_with('|'))
            .find_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let flags = cells.get(1)?;
                if *flags == format!("`{flag}`") {
                    return Some(Cell::Value(cells.get(3)?.to_string()));
                }
                let listed = flags.split(", ").any(|f| f == format!("`{flag}`"));
                (listed && cells.get(2) == Some(&"as for the depot")).then_some(Cell::AsForTheDepot)
            })
    })
}

/// The defaults an annotated contrib file gives, as (key, text): a comment's
/// `Default: X` for the key set right below it (`Default: X, Y` for the
/// keys below it in turn when several follow), each commented-out key of a
/// block announced with "defaults shown", and a trailing `X (default)`.
fn contrib_defaults(contrib: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = contrib.lines().collect();
    let key_of = |line: &str| {
        let line = line.trim_start_matches(['#', ' ']);
        let (key, value) = line.split_once(" = ")?;
        let key = key.trim();
        key.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            .then(|| {
                (
                    key.to_owned(),
                    value.split(" #").next().unwrap().trim().to_owned(),
                )
            })
    };
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some((_, text)) = line.split_once("Default: ") {
            // The keys of this paragraph, up to its blank line.
            let keys: Vec<String> = lines[i + 1..]
                .iter()
                .take_while(|l| !l.trim().is_empty())
                .filter_map(|l| key_of(l).map(|(k, _)| k))
                .collect();
            match keys.as_slice() {
                [] => {}
                [key] => found.push((key.clone(), text.to_owned())),
                several => {
                    let parts: Vec<&str> = text.split(", ").collect();
                    assert_eq!(
                        parts.len(),
                        several.len(),
                        "{line:?} names a default for each of {several:?}"
                    );
                    for (key, part) in several.iter().zip(parts) {
                        found.push((key.clone(), part.to_owned()));
                    }
                }
            }
        }
        if line.contains("defaults shown") {
            for l in lines[i + 1..].iter().take_while(|l| !l.trim().is_empty()) {
                if let Some(kv) = key_of(l) {
                    found.push(kv);
                }
            }
        }
        if let (Some((key, _)), Some((_, note))) = (key_of(line), line.split_once(" # "))
            && let Some((before, _)) = note.split_once(" (default)")
        {
            found.push((key, before.rsplit(' ').next().unwrap().to_owned()));
        }
    }
    found
}
