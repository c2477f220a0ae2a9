//! systemd `Type=notify`: tells the service manager when Stint is ready, stopping, and
//! (with `WatchdogSec=`) still alive, over the datagram socket named by `NOTIFY_SOCKET`.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to a Unix socket, a path or (with a
//! leading `@`) an abstract name; std's `UnixDatagram` speaks it, so no crate and no
//! unsafe code. Without `NOTIFY_SOCKET` (not under systemd) every call does nothing.

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// How long one notification may block when the manager's queue is full.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// From the process environment: `None` when `NOTIFY_SOCKET` is unset or unusable
    /// (logged: a unit with `Type=notify` would otherwise time out without a clue).
    pub fn from_env() -> Option<Self> {
        let value = std::env::var_os("NOTIFY_SOCKET")?;
        match Self::new(&value) {
            Ok(notifier) => Some(notifier),
            Err(err) => {
                tracing::warn!(error = %err, "NOTIFY_SOCKET is set but unusable; systemd will not hear READY=1");
                None
            }
        }
    }

    /// For the socket `name`: an absolute path, or `@name` for an abstract socket.
    pub fn new(name: &OsStr) -> io::Result<Self> {
        let addr = socket_addr(name)?;
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(Self { socket, addr })
    }

    /// Sends `state` (newline-separated `KEY=VALUE` assignments).
    pub fn send(&self, state: &str) -> io::Result<()> {
        self.socket.send_to_addr(state.as_bytes(), &self.addr)?;
        Ok(())
    }

    /// [`Self::send`], logging a failure instead of returning it (a lost notification
    /// must not stop the server).
    pub fn notify(&self, state: &str) {
        if let Err(err) = self.send(state) {
            tracing::warn!(error = %err, "systemd notification failed");
        }
    }
}

fn socket_addr(name: &OsStr) -> io::Result<SocketAddr> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(name),
        #[cfg(target_os = "linux")]
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..])
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET must be an absolute path or @abstract name",
        )),
    }
}

/// The watchdog ping interval when systemd asked for one: half of `WATCHDOG_USEC`, if
/// `WATCHDOG_PID` is unset or names this process.
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// [`watchdog_interval`] from the process environment.
pub fn watchdog_from_env() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn path_socket_receives_ready_and_stopping() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let manager = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(path.as_os_str()).unwrap();
        notifier.send("READY=1\nSTATUS=serving").unwrap();
        assert_eq!(receive(&manager), "READY=1\nSTATUS=serving");
        notifier.notify("STOPPING=1");
        assert_eq!(receive(&manager), "STOPPING=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket_receives_ready() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("stint-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let manager = UnixDatagram::bind_addr(&addr).unwrap();
        let notifier = Notifier::new(OsStr::new(&format!("@{name}"))).unwrap();
        notifier.send("READY=1").unwrap();
        assert_eq!(receive(&manager), "READY=1");
    }

    #[test]
    fn bad_socket_names_are_refused_and_a_gone_manager_is_an_error() {
        for name in ["", "relative/path", "x"] {
            assert!(Notifier::new(OsStr::new(name)).is_err(), "{name:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let notifier = Notifier::new(dir.path().join("absent.sock").as_os_str()).unwrap();
        assert!(notifier.send("READY=1").is_err());
        notifier.notify("READY=1"); // logged, not fatal
    }

    #[test]
    fn watchdog_interval_is_half_the_timeout_for_this_process() {
        let cases = [
            (Some("10000000"), None, Some(Duration::from_secs(5))),
            (Some("10000000"), Some("42"), Some(Duration::from_secs(5))),
            (Some("10000000"), Some("43"), None),
            (Some("10000000"), Some("x"), None),
            (None, None, None),
            (Some("0"), None, None),
            (Some("soon"), None, None),
            (Some("1"), None, Some(Duration::from_millis(1))),
        ];
        for (usec, pid, want) in cases {
            assert_eq!(watchdog_interval(usec, pid, 42), want, "{usec:?} {pid:?}");
        }
    }
}
