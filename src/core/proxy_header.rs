//! The PROXY protocol header: how a load balancer in front of the broker tells it the
//! client's address. Version 2 (binary: HAProxy's `send-proxy-v2`, AWS NLB, Envoy) and
//! version 1 (one text line: nginx's `proxy_protocol on`, HAProxy's `send-proxy`).
//!
//! Behind a proxy every connection comes from the proxy, so per-address login throttling,
//! `aws:SourceIp` conditions and the audit log's `source_ip` would all see one address.
//! Both versions let a reader take exactly the header off the socket and leave the bytes
//! behind it (TLS or HTTP/2) untouched: v2 has a fixed 16-byte part that gives the length
//! of the rest, and a v1 line is at least [`V1_MIN_LEN`] bytes and ends at its first CRLF,
//! within [`V1_MAX_LEN`].
//!
//! Only connections from configured proxy addresses may carry a header: anyone else could
//! claim any address (see `rpc::proxy`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::policy::Cidr;

/// The 12 bytes every v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The fixed part: signature, version and command, family and protocol, length.
pub const FIXED_LEN: usize = 16;

/// Largest address-and-TLV block accepted. HAProxy's own TLVs (ALPN, authority, unique
/// id, SSL details) fit well within it; the protocol's own limit is 65,535.
pub const MAX_BLOCK_LEN: usize = 4096;

/// How every v1 header starts.
pub const V1_PREFIX: &[u8] = b"PROXY ";

/// The shortest v1 header, `PROXY UNKNOWN\r\n`: this many bytes can always be read first,
/// whichever version follows (a v2 header is longer).
pub const V1_MIN_LEN: usize = 15;

/// The longest v1 header, CRLF included (the specification's bound).
pub const V1_MAX_LEN: usize = 107;

/// What a header says about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `PROXY` over TCP: the client's address and port.
    Client(SocketAddr),
    /// `LOCAL` (the proxy's own connection, e.g. a health check) or an address family the
    /// broker does not use (UNIX sockets, UDP, unspecified): the connection's own address
    /// stands.
    Proxy,
}

/// Why the bytes are not a PROXY header.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the connection did not start with a PROXY protocol header")]
    Signature,
    #[error("PROXY protocol v1 line has no CRLF within {V1_MAX_LEN} bytes")]
    V1TooLong,
    #[error("PROXY protocol v1 line is malformed: {0}")]
    V1Malformed(&'static str),
    #[error("PROXY protocol binary header version {0} is not supported (only 2)")]
    Version(u8),
    #[error("PROXY protocol command {0:#x} is neither LOCAL nor PROXY")]
    Command(u8),
    #[error("PROXY protocol header block of {0} bytes is over the {MAX_BLOCK_LEN}-byte limit")]
    TooLong(usize),
    #[error("PROXY protocol address block of {got} bytes is shorter than its family's {need}")]
    ShortAddresses { got: usize, need: usize },
    #[error("PROXY protocol header announced {want} bytes after its fixed part but has {got}")]
    Length { got: usize, want: usize },
    #[error("PROXY protocol address family and protocol byte {0:#04x} is not defined")]
    Family(u8),
}

/// The family/protocol bytes the specification defines (UNSPEC, TCP/UDP over IPv4, IPv6,
/// UNIX); any other must be refused.
const FAMILIES: [u8; 7] = [0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32];

/// Parses the `proxy_protocol_from` entries: addresses or CIDRs, written as what they are
/// (an IPv4-mapped IPv6 entry would never match, peers being compared as IPv4), and none
/// that admits every address (`/0`: anyone could then claim any address).
pub fn parse_trusted(entries: &[String]) -> Result<Vec<Cidr>, String> {
    entries
        .iter()
        .map(|entry| {
            let entry = entry.trim();
            let cidr = Cidr::parse(entry)
                .ok_or_else(|| format!("{entry:?} is not an IP address or CIDR"))?;
            if entry.to_ascii_lowercase().starts_with("::ffff:") {
                return Err(format!("{entry:?}: write the IPv4 address itself"));
            }
            if cidr.is_everything() {
                return Err(format!(
                    "{entry:?} trusts every address, so any client could claim any address: name the load balancers"
                ));
            }
            Ok(cidr)
        })
        .collect()
}

/// Reads the fixed 16 bytes: checks signature, version and command, and returns the
/// length of the block that follows (addresses, then TLVs).
pub fn block_len(fixed: &[u8; FIXED_LEN]) -> Result<usize, HeaderError> {
    if fixed[..12] != SIGNATURE {
        return Err(HeaderError::Signature);
    }
    let version = fixed[12] >> 4;
    if version != 2 {
        return Err(HeaderError::Version(version));
    }
    let command = fixed[12] & 0x0f;
    if command > 1 {
        return Err(HeaderError::Command(command));
    }
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > MAX_BLOCK_LEN {
        return Err(HeaderError::TooLong(len));
    }
    Ok(len)
}

/// Parses a whole header: the fixed part and the `block_len` bytes after it.
pub fn parse(fixed: &[u8; FIXED_LEN], block: &[u8]) -> Result<Source, HeaderError> {
    let len = block_len(fixed)?;
    if block.len() != len {
        return Err(HeaderError::Length {
            got: block.len(),
            want: len,
        });
    }
    let local = fixed[12] & 0x0f == 0;
    // High nibble: family (1 IPv4, 2 IPv6, 3 UNIX); low nibble: protocol (1 STREAM).
    let family = fixed[13];
    if !FAMILIES.contains(&family) {
        return Err(HeaderError::Family(family));
    }
    if local || family & 0x0f != 1 {
        return Ok(Source::Proxy);
    }
    let need = match family >> 4 {
        1 => 12,
        2 => 36,
        _ => return Ok(Source::Proxy),
    };
    if block.len() < need {
        return Err(HeaderError::ShortAddresses {
            got: block.len(),
            need,
        });
    }
    let source = if need == 12 {
        let ip = Ipv4Addr::new(block[0], block[1], block[2], block[3]);
        SocketAddr::from((ip, u16::from_be_bytes([block[8], block[9]])))
    } else {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&block[..16]);
        let port = u16::from_be_bytes([block[32], block[33]]);
        SocketAddr::from((Ipv6Addr::from(octets), port))
    };
    Ok(Source::Client(source))
}

/// Where a v1 line ends (the index after its CRLF), if `bytes` holds it whole; `Ok(None)`
/// when more bytes may complete it.
pub fn v1_len(bytes: &[u8]) -> Result<Option<usize>, HeaderError> {
    let window = &bytes[..bytes.len().min(V1_MAX_LEN)];
    match window.windows(2).position(|pair| pair == b"\r\n") {
        Some(at) => Ok(Some(at + 2)),
        None if bytes.len() >= V1_MAX_LEN => Err(HeaderError::V1TooLong),
        None => Ok(None),
    }
}

/// Parses one whole v1 line, CRLF included: `PROXY TCP4|TCP6 <source> <destination>
/// <source port> <destination port>`, single spaces, or `PROXY UNKNOWN` and anything up to
/// the CRLF (the proxy's own connection: the connection's address stands).
pub fn parse_v1(line: &[u8]) -> Result<Source, HeaderError> {
    let malformed = HeaderError::V1Malformed;
    if line.len() > V1_MAX_LEN {
        return Err(HeaderError::V1TooLong);
    }
    if line.len() < V1_MIN_LEN {
        return Err(malformed(
            "it is shorter than the shortest line, PROXY UNKNOWN",
        ));
    }
    if !line.is_ascii() {
        return Err(malformed("it is not ASCII"));
    }
    let body = line
        .strip_prefix(V1_PREFIX)
        .ok_or(HeaderError::Signature)?
        .strip_suffix(b"\r\n")
        .ok_or(malformed("it does not end with CRLF"))?;
    if body.starts_with(b"UNKNOWN") && matches!(body.get(7), None | Some(b' ')) {
        return Ok(Source::Proxy);
    }
    let body = std::str::from_utf8(body).map_err(|_| malformed("it is not ASCII"))?;
    let fields: Vec<&str> = body.split(' ').collect();
    let [protocol, source, destination, source_port, destination_port] = fields[..] else {
        return Err(malformed(
            "it does not have a protocol, two addresses and two ports, one space apart",
        ));
    };
    let ip: IpAddr = match protocol {
        "TCP4" => source
            .parse::<Ipv4Addr>()
            .map_err(|_| malformed("the TCP4 source is not an IPv4 address"))?
            .into(),
        "TCP6" => source
            .parse::<Ipv6Addr>()
            .map_err(|_| malformed("the TCP6 source is not an IPv6 address"))?
            .into(),
        _ => return Err(malformed("the protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let destination_ok = match protocol {
        "TCP4" => destination.parse::<Ipv4Addr>().is_ok(),
        _ => destination.parse::<Ipv6Addr>().is_ok(),
    };
    if !destination_ok {
        return Err(malformed(
            "the destination is not an address of the protocol's family",
        ));
    }
    let port = parse_port(source_port).ok_or(malformed("the source port is not 0-65535"))?;
    parse_port(destination_port).ok_or(malformed("the destination port is not 0-65535"))?;
    Ok(Source::Client(SocketAddr::new(ip, port)))
}

/// A decimal port as v1 writes it: digits only, no sign, no leading zero.
fn parse_port(text: &str) -> Option<u16> {
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    (digits_only && !leading_zero).then(|| text.parse().ok())?
}

/// Encodes a v1 line for `source` → `destination`, as nginx would (TCP6, with IPv4
/// addresses mapped, unless both are IPv4). For tests and tools that stand in for a proxy.
pub fn encode_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let line = match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            format!(
                "PROXY TCP4 {} {} {} {}\r\n",
                s.ip(),
                d.ip(),
                s.port(),
                d.port()
            )
        }
        (s, d) => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
                SocketAddr::V6(a) => *a.ip(),
            };
            format!(
                "PROXY TCP6 {} {} {} {}\r\n",
                v6(s),
                v6(d),
                s.port(),
                d.port()
            )
        }
    };
    line.into_bytes()
}

/// Encodes a `PROXY` header for `source` → `destination` (same family), as a proxy would.
/// For tests and tools that stand in for a proxy.
pub fn encode(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.push(0x21);
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        (s, d) => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
                SocketAddr::V6(a) => *a.ip(),
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
    }
    out
}

/// Splits `bytes` into a header (either version) and what follows, for callers holding the
/// whole input (the fuzz target). `Ok(None)`: not enough bytes yet.
pub fn split(bytes: &[u8]) -> Result<Option<(Source, &[u8])>, HeaderError> {
    if bytes.starts_with(V1_PREFIX) {
        let Some(len) = v1_len(bytes)? else {
            return Ok(None);
        };
        return Ok(Some((parse_v1(&bytes[..len])?, &bytes[len..])));
    }
    let Some(fixed) = bytes.get(..FIXED_LEN) else {
        return Ok(None);
    };
    #[allow(clippy::expect_used)] // exactly FIXED_LEN bytes
    let fixed: &[u8; FIXED_LEN] = fixed.try_into().expect("16 bytes");
    let len = block_len(fixed)?;
    let Some(block) = bytes.get(FIXED_LEN..FIXED_LEN + len) else {
        return Ok(None);
    };
    let source = parse(fixed, block)?;
    Ok(Some((source, &bytes[FIXED_LEN + len..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn encoded_headers_parse_back_and_leave_the_rest() {
        let cases = [
            ("203.0.113.7:50123", "10.0.0.2:7420"),
            ("[2001:db8::7]:443", "[2001:db8::1]:7420"),
        ];
        for (source, destination) in cases {
            let mut bytes = encode(addr(source), addr(destination));
            bytes.extend_from_slice(b"PRI * HTTP/2.0");
            let (parsed, rest) = split(&bytes).unwrap().unwrap();
            assert_eq!(parsed, Source::Client(addr(source)), "{source}");
            assert_eq!(rest, b"PRI * HTTP/2.0");
        }
    }

    #[test]
    fn tlvs_after_the_addresses_are_skipped() {
        let mut bytes = encode(addr("198.51.100.9:1"), addr("10.0.0.2:7420"));
        // ALPN TLV "h2": type 0x01, length 2.
        bytes[15] = 12 + 5;
        bytes.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2', 0xAA]);
        let (parsed, rest) = split(&bytes).unwrap().unwrap();
        assert_eq!(parsed, Source::Client(addr("198.51.100.9:1")));
        assert_eq!(rest, [0xAA]);
    }

    #[test]
    fn local_and_other_families_keep_the_connection_address() {
        let mut local = encode(addr("203.0.113.7:1"), addr("10.0.0.2:7420"));
        local[12] = 0x20;
        assert_eq!(split(&local).unwrap().unwrap().0, Source::Proxy);
        let unix = [SIGNATURE.as_slice(), &[0x21, 0x31, 0, 0]].concat();
        assert_eq!(split(&unix).unwrap().unwrap().0, Source::Proxy);
        let udp = [SIGNATURE.as_slice(), &[0x21, 0x12, 0, 0]].concat();
        assert_eq!(split(&udp).unwrap().unwrap().0, Source::Proxy);
    }

    #[test]
    fn trusted_entries_must_name_load_balancers() {
        let ok = ["10.0.0.5", " 10.0.1.0/24", "fd00::/8", "2001:db8::1"];
        let ok: Vec<String> = ok.iter().map(|s| s.to_string()).collect();
        assert_eq!(parse_trusted(&ok).unwrap().len(), 4);
        for (entry, want) in [
            ("lb.internal", "not an IP address"),
            ("10.0.0.0/33", "not an IP address"),
            ("0.0.0.0/0", "trusts every address"),
            ("::/0", "trusts every address"),
            ("10.0.0.0/00", "trusts every address"),
            ("10.1.2.3/000", "trusts every address"),
            ("::ffff:10.0.0.5", "write the IPv4 address"),
        ] {
            let err = parse_trusted(&[entry.to_string()]).unwrap_err();
            assert!(err.contains(want), "{entry}: {err}");
        }
    }

    #[test]
    fn v1_lines_parse_back_and_leave_the_rest() {
        let cases = [
            ("203.0.113.7:50123", "10.0.0.2:7420"),
            ("[2001:db8::7]:443", "[2001:db8::1]:7420"),
            ("0.0.0.0:0", "255.255.255.255:65535"),
        ];
        for (source, destination) in cases {
            let mut bytes = encode_v1(addr(source), addr(destination));
            bytes.extend_from_slice(b"PRI * HTTP/2.0\r\n");
            let (parsed, rest) = split(&bytes).unwrap().unwrap();
            assert_eq!(parsed, Source::Client(addr(source)), "{source}");
            assert_eq!(rest, b"PRI * HTTP/2.0\r\n");
        }
        // The longest possible line fits the bound.
        let longest = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(longest.len(), V1_MAX_LEN - 3);
        assert!(matches!(split(longest), Ok(Some((Source::Client(_), [])))));
    }

    #[test]
    fn v1_unknown_keeps_the_connection_address() {
        for line in [
            &b"PROXY UNKNOWN\r\n"[..],
            b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
        ] {
            assert!(line.len() >= V1_MIN_LEN);
            assert_eq!(split(line), Ok(Some((Source::Proxy, &[][..]))));
        }
    }

    #[test]
    fn bad_v1_lines_say_what_is_wrong() {
        let cases: [(&[u8], &str); 18] = [
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "two ports"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "two ports"),
            (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "two ports"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "two ports"),
            (
                b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
                "not TCP4, TCP6 or UNKNOWN",
            ),
            (
                b"PROXY UNKNOWNX 1.2.3.4 5.6.7.8 1 2\r\n",
                "not TCP4, TCP6 or UNKNOWN",
            ),
            (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "not an IPv4 address"),
            (
                b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
                "not an IPv4 address",
            ),
            (b"PROXY TCP6 1.2.3.4 ::2 1 2\r\n", "not an IPv6 address"),
            (b"PROXY TCP4 1.2.3.4 ::2 1 2\r\n", "destination"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "source port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "source port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "source port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 x\r\n", "destination port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xff\r\n", "not ASCII"),
            (
                "PROXY TCP4 1.2.3.4 5.6.7.8 1 \u{ff12}\r\n".as_bytes(),
                "not ASCII",
            ),
            (b"PROXY \r\n", "shorter than the shortest line"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r\n", "destination port"),
        ];
        for (line, want) in cases {
            let err = split(line).unwrap_err().to_string();
            assert!(
                err.contains(want),
                "{:?}: {err}",
                String::from_utf8_lossy(line)
            );
        }
        let endless = [V1_PREFIX, &[b'A'; V1_MAX_LEN]].concat();
        assert_eq!(split(&endless), Err(HeaderError::V1TooLong));
        assert_eq!(split(&endless[..V1_MAX_LEN - 1]), Ok(None));
    }

    proptest::proptest! {
        /// Whatever the client address, and whatever follows the header, the header gives
        /// the address back and leaves the rest untouched.
        #[test]
        fn any_client_round_trips(
            octets in proptest::array::uniform16(0u8..),
            port in 0u16..,
            v4 in proptest::bool::ANY,
            rest in proptest::collection::vec(0u8.., 0..64),
        ) {
            let ip = if v4 {
                std::net::IpAddr::from([octets[0], octets[1], octets[2], octets[3]])
            } else {
                std::net::IpAddr::from(octets)
            };
            let client = SocketAddr::new(ip, port);
            for mut bytes in [encode(client, client), encode_v1(client, client)] {
                bytes.extend_from_slice(&rest);
                let (source, tail) = split(&bytes).unwrap().unwrap();
                proptest::prop_assert_eq!(source, Source::Client(client));
                proptest::prop_assert_eq!(tail, &rest[..]);
            }
        }
    }

    #[test]
    fn incomplete_input_asks_for_more() {
        let (source, destination) = (addr("203.0.113.7:1"), addr("10.0.0.2:7420"));
        for bytes in [encode(source, destination), encode_v1(source, destination)] {
            for cut in 0..bytes.len() {
                assert_eq!(split(&bytes[..cut]), Ok(None), "cut at {cut}");
            }
        }
    }

    #[test]
    fn bad_headers_say_what_is_wrong() {
        let good = encode(addr("203.0.113.7:1"), addr("10.0.0.2:7420"));
        let with = |i: usize, b: u8| {
            let mut h = good.clone();
            h[i] = b;
            h
        };
        let cases: [(Vec<u8>, HeaderError); 8] = [
            (with(13, 0x13), HeaderError::Family(0x13)),
            (with(13, 0x41), HeaderError::Family(0x41)),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
                HeaderError::Signature,
            ),
            (
                b"PROXZ TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
                HeaderError::Signature,
            ),
            (with(12, 0x11), HeaderError::Version(1)),
            (with(12, 0x22), HeaderError::Command(2)),
            (
                [&good[..14], &[0x10, 0x01]].concat(),
                HeaderError::TooLong(4097),
            ),
            (
                [&good[..15], &[4], &good[16..20]].concat(),
                HeaderError::ShortAddresses { got: 4, need: 12 },
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(split(&bytes), Err(want.clone()), "{want}");
        }
    }
}
