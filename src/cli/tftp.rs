//! TFTP for the demo and the tests: a minimal client (RFC 1350 read request,
//! octet mode) and a tftpd-hpa serving a directory on loopback, so that a
//! real TFTP server reads a PXE config the way a booting client makes it.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const RRQ: u16 = 1;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const BLOCK: usize = 512;
const RETRIES: u32 = 5;
/// How long in.tftpd, started as inetd would, waits for the next request
/// before it exits (`--timeout`): ten years, i.e. for as long as its owner
/// runs — no inetd is there to start it again.
const INETD_IDLE_SECONDS: &str = "315360000";

/// Reads `name` from the TFTP server at `server`. Blocking.
pub fn fetch(server: SocketAddr, name: &str, timeout: Duration) -> io::Result<Vec<u8>> {
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal address")
    } else {
        "[::]:0".parse().expect("literal address")
    };
    let socket = UdpSocket::bind(local)?;
    socket.set_read_timeout(Some(timeout))?;
    let mut transfer = Transfer {
        socket,
        name,
        last_sent: read_request(name),
        last_to: server,
        peer: None,
        expected: 1,
        data: Vec::new(),
        retries: 0,
    };
    transfer.resend()?;
    let mut buf = [0u8; 4 + BLOCK];
    loop {
        let (n, from) = match transfer.socket.recv_from(&mut buf) {
            Ok(received) => received,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                transfer.timed_out()?;
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(data) = transfer.packet(&buf[..n], from)? {
            return Ok(data);
        }
    }
}

/// A read request for `name` in octet mode.
fn read_request(name: &str) -> Vec<u8> {
    let mut request = RRQ.to_be_bytes().to_vec();
    request.extend_from_slice(name.as_bytes());
    request.push(0);
    request.extend_from_slice(b"octet");
    request.push(0);
    request
}

/// One read in progress.
struct Transfer<'a> {
    socket: UdpSocket,
    name: &'a str,
    /// What was sent last (the request, then the last ACK), for resending.
    last_sent: Vec<u8>,
    last_to: SocketAddr,
    /// The server answers from a fresh port (its transfer id); later packets
    /// from anywhere else are not ours.
    peer: Option<SocketAddr>,
    expected: u16,
    data: Vec<u8>,
    retries: u32,
}

impl Transfer<'_> {
    fn resend(&self) -> io::Result<()> {
        self.socket.send_to(&self.last_sent, self.last_to).map(drop)
    }

    /// Nothing came in time: resend, or give up after [`RETRIES`].
    fn timed_out(&mut self) -> io::Result<()> {
        self.retries += 1;
        if self.retries > RETRIES {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TFTP read of {} timed out", self.name),
            ));
        }
        self.resend()
    }

    /// Handles one packet; the file once its last block is in.
    fn packet(&mut self, packet: &[u8], from: SocketAddr) -> io::Result<Option<Vec<u8>>> {
        if packet.len() < 4 || self.peer.is_some_and(|p| p != from) {
            return Ok(None);
        }
        self.peer = Some(from);
        let opcode = u16::from_be_bytes([packet[0], packet[1]]);
        let number = u16::from_be_bytes([packet[2], packet[3]]);
        let payload = &packet[4..];
        match opcode {
            DATA if number == self.expected => {
                self.data.extend_from_slice(payload);
                let mut ack = ACK.to_be_bytes().to_vec();
                ack.extend_from_slice(&number.to_be_bytes());
                self.socket.send_to(&ack, from)?;
                if payload.len() < BLOCK {
                    return Ok(Some(std::mem::take(&mut self.data)));
                }
                self.last_sent = ack;
                self.last_to = from;
                self.expected = self.expected.wrapping_add(1);
                self.retries = 0;
                Ok(None)
            }
            // A duplicate of the previous block: our ACK was lost.
            DATA => self.resend().map(|()| None),
            ERROR => {
                let message = String::from_utf8_lossy(payload)
                    .trim_end_matches('\0')
                    .to_string();
                let kind = if number == 1 {
                    io::ErrorKind::NotFound
                } else {
                    io::ErrorKind::Other
                };
                Err(io::Error::new(
                    kind,
                    format!("TFTP error {number} for {}: {message}", self.name),
                ))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected TFTP opcode {opcode}"),
            )),
        }
    }
}

/// A program on `PATH` or in the sbin directories (where `in.tftpd` lives).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default() + ":/usr/sbin:/sbin";
    path.split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Whether this process runs as root (real uid 0).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// tftpd-hpa serving a directory on a free loopback port; killed on drop.
pub struct TftpServer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl TftpServer {
    /// The in.tftpd binary, if installed and usable: it serves only when
    /// started as root (it drops privileges itself).
    pub fn find() -> Option<PathBuf> {
        if !running_as_root() {
            return None;
        }
        find_program("in.tftpd")
    }

    /// Starts `binary` serving `dir` (`--secure`: names are relative to it)
    /// on a loopback port of its own.
    pub fn start(binary: &Path, dir: &Path) -> io::Result<Self> {
        // The socket is bound here and handed to in.tftpd as its standard
        // input, as inetd starts it: the port is taken from the start. (In
        // its own listen mode it binds a port given to it, and a free port
        // looked up and closed first could be taken by another socket before
        // it binds; it would exit and every read would time out.) Packets
        // that come before it runs wait in the socket.
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        let addr = socket.local_addr()?;
        let child = Command::new(binary)
            .args(["-s", "-t", INETD_IDLE_SECONDS])
            .arg(dir)
            .stdin(Stdio::from(OwnedFd::from(socket)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Self { child, addr })
    }
}

impl Drop for TftpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
