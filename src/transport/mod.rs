//! How pxeconf's gRPC hops are carried: TLS (rustls, ring) with certificates
//! reloaded in place, the connections a server accepts and how long a peer
//! may hold them, and the one channel builder every client uses.
//!
//! - `tls`: the PEM files, loaded and reloaded ([`Tls`]);
//! - `incoming`: accepted connections under a cap and deadlines, the peer's
//!   certificate on each request ([`ConnInfo`]);
//! - `client`: channels to peers, `http://` or `https://`;
//! - `activity`: which connections have a call in flight;
//! - `guard`: calls to a service refused without a client certificate;
//! - `limits`: the numbers, the descriptor budget, rate-limited log lines.

mod activity;
pub mod client;
mod guard;
pub mod incoming;
pub mod limits;
mod settings;
pub mod tls;

pub use activity::ActivityLayer;
pub use client::{ChannelError, ChannelOptions, channel, connect};
pub use guard::RequireCertLayer;
pub use incoming::{ConnInfo, incoming};
pub use limits::{Limits, RateLimited};
pub use settings::{ClientAuth, Transport};
pub use tls::{Tls, TlsError, TlsFiles};
