//! `pxeconf loadtest` flags, and the choices they parse into.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::auth::EnvKey;
use crate::cli::admin::ADMIN_KEY_ENV;
use crate::config::DEFAULT_IO_THREADS;
use crate::configserver::dispatch::DispatchSettings;

/// A measured scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// N clients' actions in a few admin calls → every config on disk.
    Bulk,
    /// Clients read their configs (TFTP) → their actions turn `none`.
    Boot,
    /// Single actions at a fixed rate on an idle system: latency per client.
    Trickle,
    /// C concurrent `SetPxeConfig` calls at one depot.
    Direct,
}

/// Which push path the configserver scenarios drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PathChoice {
    /// Depots serving `SetPxeConfig`.
    New,
    /// Legacy-only depots (`SetPxeConfigByFqdn` and seven look-ups).
    Legacy,
    /// Both, side by side.
    Both,
}

/// `pxeconf loadtest` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadtestArgs {
    /// Clients per push path in `bulk` (and so read in `boot`).
    #[arg(long, default_value_t = 10_000)]
    pub clients: u32,
    /// Scenarios to run, comma-separated [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub scenario: Vec<Scenario>,
    /// Push path(s) for bulk, trickle and boot.
    #[arg(long, value_enum, default_value_t = PathChoice::Both)]
    pub path: PathChoice,
    /// Self-contained: how many depots to run [default: 4]; with
    /// --configserver: which registered depots to use (comma-separated ids)
    /// [default: all].
    #[arg(long)]
    pub depots: Option<String>,
    /// Self-contained: legacy-only depots, in addition to --depots.
    #[arg(long, default_value_t = 1)]
    pub legacy_depots: usize,
    /// Admin calls the bulk's actions are split into (each one transaction).
    #[arg(long, default_value_t = 2)]
    pub bulk_calls: u32,
    /// Clients per path set one by one in `trickle`.
    #[arg(long, default_value_t = 200)]
    pub trickle_clients: u32,
    /// Single actions per second in `trickle`.
    #[arg(long, default_value_t = 50.0)]
    pub trickle_rate: f64,
    /// `SetPxeConfig` calls in `direct` [default: --clients].
    #[arg(long)]
    pub direct_calls: Option<u32>,
    /// Calls in flight in `direct` and in the no-op RPC baseline.
    #[arg(long, default_value_t = 64)]
    pub direct_concurrency: usize,
    /// Bundles per call in `direct`: 1 drives `SetPxeConfig`, more drive
    /// `BatchSetPxeConfigs` with that many bundles per call (at most 1000).
    #[arg(long, default_value_t = 1)]
    pub direct_batch: usize,
    /// Concurrent readers in `boot`.
    #[arg(long, default_value_t = 16)]
    pub boot_concurrency: usize,
    /// Self-contained: pushes in flight per depot (the configserver's setting).
    #[arg(long, default_value_t = DispatchSettings::default().concurrency)]
    pub concurrency: usize,
    /// Self-contained: blocking I/O threads per depot.
    #[arg(long, default_value_t = DEFAULT_IO_THREADS)]
    pub io_threads: usize,
    /// Self-contained: where the database and PXE directories go [default: a
    /// fresh directory under /dev/shm (tmpfs) if present, else the system
    /// temp dir]. The raw file-pair baseline runs there too. With
    /// --configserver: only the raw baseline, in this directory of this
    /// machine (none without it).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Self-contained: the configserver's store on a PostgreSQL server
    /// (`postgres://user@host/postgres`): the run creates a database of its
    /// own there, `pxeconf_loadtest_<run>` (the user needs CREATEDB), and
    /// drops it afterwards — kept, like the directory, with --keep or when
    /// the run failed [default: a SQLite file in the run's directory].
    #[arg(long)]
    pub database: Option<String>,
    /// Self-contained: after the run, `bulk` again with the same clients and
    /// paths on this store (a `postgres://…` server as for --database, or a
    /// file), its rates beside the first store's.
    #[arg(long)]
    pub compare_database: Option<String>,
    /// Self-contained: a site's other products, as a real inventory has
    /// them — this many products on every depot, each with 20 property
    /// states there, and all of them on every client with no action. A push
    /// carries only its own product's, so they cost only the reads of a
    /// bigger inventory; 0 leaves the run's one product alone.
    #[arg(long, default_value_t = 0)]
    pub site_products: u32,
    /// Self-contained: keep the directory (and the roles' logs) afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Self-contained: the roles' log filter (`RUST_LOG` syntax), e.g.
    /// `warn,sqlx::query=debug` with --keep to count the statements a
    /// push costs. Their bind lines are always logged.
    #[arg(long, default_value = "warn")]
    pub role_log: String,
    /// Run against this configserver (gRPC URL) instead of starting one.
    #[arg(long)]
    pub configserver: Option<String>,
    /// With --configserver: the admin key file (or the key in PXECONF_ADMIN_KEY, which wins).
    #[arg(long, env = "PXECONF_ADMIN_KEY_FILE")]
    pub admin_key_file: Option<PathBuf>,
    /// The key in `PXECONF_ADMIN_KEY`, never a flag (`ps` would show it).
    #[arg(skip = EnvKey::read(ADMIN_KEY_ENV))]
    pub admin_key_env: EnvKey,
    /// With --configserver: its /metrics URL (for look-ups per client).
    #[arg(long)]
    pub metrics_url: Option<String>,
    /// With --configserver: TFTP server for `boot`, `HOST:PORT` for every
    /// depot or `DEPOT=HOST:PORT`; repeatable.
    #[arg(long)]
    pub tftp: Vec<String>,
    /// With --configserver: the host key file of the depot `direct` drives
    /// (the first new-path depot used); without it `direct` is skipped.
    #[arg(long)]
    pub depot_key_file: Option<PathBuf>,
    /// With --configserver over https://: PEM CA certificate(s) trusted for
    /// the configserver and the depots (their certificates' issuer); with
    /// --configserver, else PXECONF_TLS_CA.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for servers that ask for one (with --tls-key);
    /// with --configserver, else PXECONF_TLS_CERT.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert; with --configserver, else
    /// PXECONF_TLS_KEY.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Give up waiting for deliveries, reads or clean-up after this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    pub timeout: std::time::Duration,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

impl LoadtestArgs {
    /// The scenarios to run, in the order they run.
    pub fn scenarios(&self) -> Vec<Scenario> {
        let mut s = if self.scenario.is_empty() {
            vec![
                Scenario::Bulk,
                Scenario::Boot,
                Scenario::Trickle,
                Scenario::Direct,
            ]
        } else {
            self.scenario.clone()
        };
        s.sort();
        s.dedup();
        s
    }

    /// Whether `scenario` runs.
    pub fn runs(&self, scenario: Scenario) -> bool {
        self.scenarios().contains(&scenario)
    }

    /// Takes the TLS files a run against a site has no flag for from
    /// `PXECONF_TLS_CA`, `PXECONF_TLS_CERT` and `PXECONF_TLS_KEY`. Only
    /// then: a self-contained run's roles talk plaintext on loopback, and
    /// the variables a shell keeps for the admin verbs must not fail it.
    pub fn tls_from_env(&mut self) -> Result<(), String> {
        if self.configserver.is_none() {
            return Ok(());
        }
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if self.tls_ca.is_none() {
            self.tls_ca = var("PXECONF_TLS_CA");
        }
        if self.tls_cert.is_none() && self.tls_key.is_none() {
            match (var("PXECONF_TLS_CERT"), var("PXECONF_TLS_KEY")) {
                (Some(cert), Some(key)) => (self.tls_cert, self.tls_key) = (Some(cert), Some(key)),
                (None, None) => {}
                _ => return Err("PXECONF_TLS_CERT and PXECONF_TLS_KEY go together".into()),
            }
        }
        Ok(())
    }

    /// Checks the flags that clap cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.clients == 0 {
            return Err("--clients must be at least 1".into());
        }
        if self.clients > MAX_CLIENTS {
            return Err(format!("--clients must be at most {MAX_CLIENTS}"));
        }
        if !(self.trickle_rate > 0.0 && self.trickle_rate <= 10_000.0) {
            return Err("--trickle-rate must be between 0 and 10000 per second".into());
        }
        if self.direct_batch == 0 || self.direct_batch > crate::depot::service::MAX_BATCH {
            return Err(format!(
                "--direct-batch must be 1 to {}",
                crate::depot::service::MAX_BATCH
            ));
        }
        if self.bulk_calls == 0 || self.direct_concurrency == 0 || self.boot_concurrency == 0 {
            return Err(
                "--bulk-calls, --direct-concurrency and --boot-concurrency must be at least 1"
                    .into(),
            );
        }
        if self.trickle_clients > MAX_CLIENTS || self.direct_calls.is_some_and(|d| d > MAX_CLIENTS)
        {
            return Err(format!(
                "--trickle-clients and --direct-calls must be at most {MAX_CLIENTS}"
            ));
        }
        if self.configserver.is_some() && self.compare_database.is_some() {
            return Err(
                "--compare-database is for self-contained runs (without --configserver)".into(),
            );
        }
        if self.configserver.is_some() && self.site_products > 0 {
            return Err(
                "--site-products is for self-contained runs: a running site has its own products"
                    .into(),
            );
        }
        if self.site_products > MAX_SITE_PRODUCTS {
            return Err(format!(
                "--site-products must be at most {MAX_SITE_PRODUCTS}"
            ));
        }
        if self.configserver.is_none() && self.tls_ca.is_some() {
            return Err("--tls-ca goes with --configserver (self-contained roles talk plaintext on loopback)".into());
        }
        if self.configserver.is_none() && (!self.tftp.is_empty() || self.metrics_url.is_some()) {
            return Err("--tftp and --metrics-url go with --configserver".into());
        }
        Ok(())
    }

    /// Self-contained: depots to start (new path, legacy).
    pub fn local_depots(&self) -> Result<(usize, usize), String> {
        let count = match &self.depots {
            None => 4,
            Some(k) => k
                .parse()
                .map_err(|_| format!("--depots {k:?}: a count without --configserver"))?,
        };
        let legacy = match self.path {
            PathChoice::New => 0,
            _ => self.legacy_depots,
        };
        let count = match self.path {
            PathChoice::Legacy => 0,
            _ => count,
        };
        if count + legacy == 0 {
            return Err("no depot to run: raise --depots or --legacy-depots".into());
        }
        Ok((count, legacy))
    }

    /// `--tftp`: (depot id or `None` for all, address).
    pub fn tftp_servers(&self) -> Result<Vec<(Option<String>, SocketAddr)>, String> {
        self.tftp
            .iter()
            .map(|t| {
                let (depot, addr) = match t.split_once('=') {
                    Some((d, a)) => (Some(d.to_owned()), a),
                    None => (None, t.as_str()),
                };
                let addr = std::net::ToSocketAddrs::to_socket_addrs(addr)
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| format!("--tftp {t:?}: expected [DEPOT=]HOST:PORT"))?;
                Ok((depot, addr))
            })
            .collect()
    }
}

/// The most `--site-products` (opsi sites have tens to a few hundred).
pub const MAX_SITE_PRODUCTS: u32 = 1000;

/// The synthetic namespace numbers clients with 24 bits (see `names`): bulk
/// and trickle clients of both paths (at most 4 × this) stay below the
/// `direct` scenario's hosts in the upper half.
pub const MAX_CLIENTS: u32 = 2_000_000;
