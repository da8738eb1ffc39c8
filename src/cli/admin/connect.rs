//! Reaching the configserver's Admin service: the `--server` URL (checked by
//! the one URL validator), the admin key (loaded by the one key loader), TLS
//! for `https://` (`--tls-ca`) through the one channel builder, one
//! connection per verb, and a failed call or connection as one line.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Response, Status};

use crate::auth::{AttachKey, EnvKey, load_key};
use crate::cli::error::CliError;
use crate::domain::Endpoint;
use crate::proto;
use crate::transport::{ChannelError, ChannelOptions, Tls, TlsFiles};

/// How long to wait for the configserver to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The environment variable that may hold the admin key (it wins over the key file).
pub const ADMIN_KEY_ENV: &str = "PXECONF_ADMIN_KEY";

/// The configserver's gRPC URL unless `--server` or `PXECONF_SERVER` says otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50050";

/// How to reach the configserver, and how to print; shared by every verb.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The configserver's gRPC URL.
    #[arg(long, env = "PXECONF_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// File holding the configserver's host key (the key itself may instead be in the
    /// environment variable PXECONF_ADMIN_KEY, which wins).
    #[arg(long, env = "PXECONF_ADMIN_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// The key in `PXECONF_ADMIN_KEY`, read with the flags but never a flag
    /// (`ps` would show it).
    #[arg(skip = EnvKey::read(ADMIN_KEY_ENV))]
    pub key_env: EnvKey,
    /// PEM CA certificates to verify an https:// configserver with.
    #[arg(long, env = "PXECONF_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for a configserver that asks for one (with --tls-key).
    #[arg(long, env = "PXECONF_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "PXECONF_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// An Admin client with the key attached to every call.
pub(super) type Admin = proto::admin_client::AdminClient<InterceptedService<Channel, AttachKey>>;

impl Connection {
    /// An Admin client over one connection, the key attached to every call:
    /// `PXECONF_ADMIN_KEY`, else the key file, else none (which a
    /// configserver without a key accepts).
    pub(super) async fn connect(&self) -> Result<Admin, CliError> {
        let key = load_key(&self.key_env, self.key_file.as_deref())?.unwrap_or_default();
        let attach = AttachKey::new(&key).map_err(|e| format!("admin key: {e}"))?;
        let url = Endpoint::parse(&self.server, "--server")?;
        let files = TlsFiles {
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            ca: self.tls_ca.clone(),
            client_ca: None,
        };
        let tls = (!files.is_empty()).then(|| Tls::load(files)).transpose()?;
        let options = ChannelOptions {
            connect_timeout: CONNECT_TIMEOUT,
            call_timeout: None,
        };
        let channel = crate::transport::connect(&url, tls.as_ref(), options)
            .await
            .map_err(|e| match e {
                ChannelError::Connect { url, message } => {
                    format!("cannot reach the configserver at {url}: {message}")
                }
                ChannelError::NoCa { url } => {
                    format!("--server {url} is https:// but no --tls-ca is given")
                }
                other => other.to_string(),
            })?;
        Ok(proto::admin_client::AdminClient::with_interceptor(
            channel, attach,
        ))
    }

    /// Prints `value` as JSON with `--json`, else as `table` prints it.
    pub(super) fn print<T: Serialize>(
        &self,
        value: &T,
        table: impl FnOnce(&T),
    ) -> Result<(), CliError> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            table(value);
        }
        Ok(())
    }
}

/// A failed call as one line, `NOT_FOUND: client x.example.org does not
/// exist`; when the status names several bad fields (`BadRequest`), one more
/// line for each: `  clients[3].hardware_address: invalid MAC address …`.
pub(super) fn grpc_error(status: &Status) -> String {
    let fields = crate::status::violation_lines(status);
    if fields.len() > 1 {
        // The message names a few; the lines name them all.
        let mut out = format!(
            "{}: {} invalid fields",
            crate::status::code_name(status.code()),
            fields.len()
        );
        for field in fields {
            out.push_str("\n  ");
            out.push_str(&field.replace('\n', " "));
        }
        return out;
    }
    let message = status.message().trim();
    let line = if message.is_empty() {
        crate::status::code_name(status.code()).to_owned()
    } else {
        format!(
            "{}: {}",
            crate::status::code_name(status.code()),
            message.replace('\n', " ")
        )
    };
    if status.code() == Code::Unauthenticated {
        // Where the CLI takes the key from, for whoever has not set it.
        format!("{line} (the admin key: --key-file, PXECONF_ADMIN_KEY_FILE or PXECONF_ADMIN_KEY)")
    } else if status.code() == Code::Internal && message.contains("h2 protocol error") {
        // What plaintext HTTP/2 to a TLS port looks like from here.
        format!("{line} (a TLS server? its URL is https://, with --tls-ca)")
    } else {
        line
    }
}

/// Whether a failed write may still have been applied: no answer came from
/// the configserver (the call was cancelled at its deadline, the
/// connection was lost), and a write it started runs to its end however
/// the call ends; or its store was unavailable, which a PostgreSQL
/// connection lost during the commit is too. A refusal applied nothing.
pub(super) fn maybe_applied(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Cancelled | Code::DeadlineExceeded | Code::Unknown | Code::Unavailable
    )
}

/// The answer of a call, or its failure as one line.
pub(super) fn answer<T>(result: Result<Response<T>, Status>) -> Result<T, CliError> {
    result
        .map(Response::into_inner)
        .map_err(|s| grpc_error(&s).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write the configserver did not answer, or answered with its store
    /// unavailable, may have been applied; one it refused was not.
    #[test]
    fn only_an_unanswered_write_may_have_been_applied() {
        use crate::status::{Problem, Reason};
        assert!(maybe_applied(&Status::cancelled("Timeout expired")));
        assert!(maybe_applied(&Status::deadline_exceeded("deadline")));
        assert!(maybe_applied(&Status::unavailable("connection reset")));
        // A busy store may be a PostgreSQL connection lost during COMMIT.
        let busy: Status = Problem::new(Reason::DatabaseBusy, "busy").into();
        assert_eq!(busy.code(), Code::Unavailable);
        assert!(maybe_applied(&busy));
        let refused: Status = Problem::new(Reason::InvalidField, "clients[0].id").into();
        assert!(!maybe_applied(&refused));
        assert!(!maybe_applied(&Status::invalid_argument(
            "clients[0].id: bad"
        )));
        assert!(!maybe_applied(&Status::internal("store")));
    }

    #[test]
    fn grpc_errors_name_the_canonical_code() {
        let status = Status::not_found("client x.example.org does not exist");
        assert_eq!(
            grpc_error(&status),
            "NOT_FOUND: client x.example.org does not exist"
        );
        assert_eq!(
            grpc_error(&Status::failed_precondition("")),
            "FAILED_PRECONDITION"
        );
        assert_eq!(
            grpc_error(&Status::internal("h2 protocol error: http2 error")),
            "INTERNAL: h2 protocol error: http2 error (a TLS server? its URL is https://, with --tls-ca)"
        );
        let two = crate::domain::ValidationError::join([
            crate::domain::ValidationError::new("clients[0].id", "bad"),
            crate::domain::ValidationError::new("clients[2].system_uuid", "short"),
        ])
        .unwrap_err();
        let status = crate::status::Problem::invalid(&two).into_status();
        assert_eq!(
            grpc_error(&status),
            "INVALID_ARGUMENT: 2 invalid fields\n  clients[0].id: bad\n  clients[2].system_uuid: short"
        );
    }

    #[tokio::test]
    async fn the_server_url_and_the_key_are_checked_before_connecting() {
        let connection = |server: &str, key: &str| Connection {
            server: server.into(),
            key_file: None,
            key_env: EnvKey::given(ADMIN_KEY_ENV, key),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            json: false,
        };
        let err = connection("nonsense", "k").connect().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "--server: \"nonsense\" is not a URL like http://host.example.org:50050"
        );
        let err = connection(DEFAULT_SERVER, "two words")
            .connect()
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "PXECONF_ADMIN_KEY: the key must be printable ASCII without spaces"
        );
    }
}
