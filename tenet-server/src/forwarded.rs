//! Client addresses behind reverse proxies: the `--trusted-proxies` ranges
//! and the `X-Forwarded-For` walk that finds the client behind them.
//!
//! Each proxy appends the address it received the request from to
//! `X-Forwarded-For`, so only the entries that trusted proxies appended are
//! facts. Everything left of them came from the client, which may write any
//! address there. The client address is therefore the rightmost entry that
//! is not a trusted proxy, and a header from a peer that is not a trusted
//! proxy is ignored.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use http::HeaderMap;
use http::header::HeaderName;
use ipnet::{IpNet, Ipv4Net};

/// Header in which proxies list the addresses a request passed through.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The address ranges of the reverse proxies whose `X-Forwarded-For`
/// entries the server believes, parsed from a comma-separated list of IP
/// addresses and CIDR ranges.
///
/// IPv4-mapped IPv6 addresses and ranges match as the IPv4 addresses they
/// map, because a dual-stack listener reports IPv4 peers in that form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    ranges: Vec<IpNet>,
}

/// A `--trusted-proxies` value that is not a list of IP addresses and CIDR
/// ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTrustedProxy {
    /// The list entry that failed to parse, trimmed.
    entry: String,
}

impl fmt::Display for InvalidTrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entry.is_empty() {
            f.write_str(
                "empty entry in the list; separate IP addresses and CIDR ranges \
                 with single commas, such as 10.0.0.0/8,127.0.0.1",
            )
        } else {
            write!(
                f,
                "\"{}\" is not an IP address or CIDR range; use entries such as \
                 10.0.0.0/8, 127.0.0.1 or fd00::/8",
                self.entry
            )
        }
    }
}

impl std::error::Error for InvalidTrustedProxy {}

impl FromStr for TrustedProxies {
    type Err = InvalidTrustedProxy;

    /// Parses a comma-separated list of IP addresses and CIDR ranges, with
    /// optional whitespace around each entry. An address is a range of one
    /// address, and host bits in a range are ignored. A blank value is an
    /// empty list, which trusts no proxy.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let ranges = text
            .split(',')
            .map(|entry| parse_range(entry.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { ranges })
    }
}

fn parse_range(entry: &str) -> Result<IpNet, InvalidTrustedProxy> {
    let range = if entry.contains('/') {
        entry.parse::<IpNet>().ok().map(|range| range.trunc())
    } else {
        entry.parse::<IpAddr>().ok().map(IpNet::from)
    };
    range.map(unmap_ipv4).ok_or_else(|| InvalidTrustedProxy {
        entry: entry.to_owned(),
    })
}

/// Returns an IPv4-mapped IPv6 range (within `::ffff:0:0/96`) as the IPv4
/// range it maps, and any other range unchanged.
fn unmap_ipv4(range: IpNet) -> IpNet {
    let IpNet::V6(v6) = range else {
        return range;
    };
    match (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96)) {
        (Some(v4), Some(prefix)) => Ipv4Net::new(v4, prefix).map_or(range, IpNet::V4),
        _ => range,
    }
}

impl TrustedProxies {
    /// Returns whether the list is empty, in which case no header is read.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Returns the trusted ranges of prefix length 0 (`0.0.0.0/0`, `::/0`),
    /// which trust every client to name its own address.
    pub fn catch_all_ranges(&self) -> Vec<String> {
        self.ranges
            .iter()
            .filter(|range| range.prefix_len() == 0)
            .map(ToString::to_string)
            .collect()
    }

    /// Returns whether `address` lies in one of the trusted ranges.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.ranges.iter().any(|range| range.contains(&address))
    }

    /// Returns the address of the client that sent a request through the
    /// TCP peer `peer`.
    ///
    /// When `peer` is a trusted proxy, this walks the `X-Forwarded-For`
    /// entries from the right (several headers count as one list, in
    /// order), skips trusted addresses and returns the first untrusted one.
    /// When every entry is trusted, the leftmost one is the client.
    ///
    /// The peer itself is returned when it is not trusted and when the
    /// header is missing or empty. It is also returned when the walk
    /// reaches an entry that is not an IP address (such as `unknown`),
    /// because nothing left of that entry can be checked. Entries left of
    /// the client address are never read.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.is_empty() || !self.contains(peer) {
            return peer;
        }
        match self.walk_forwarded_for(headers) {
            Ok(Some(client)) => client,
            Ok(None) => peer,
            Err(reason) => {
                tracing::debug!(
                    %peer,
                    reason = reason.code(),
                    "ignored X-Forwarded-For from a trusted proxy; using the proxy's address"
                );
                peer
            }
        }
    }

    /// Returns the client address from `X-Forwarded-For`, or `None` when
    /// the header has no entries.
    fn walk_forwarded_for(&self, headers: &HeaderMap) -> Result<Option<IpAddr>, Malformed> {
        let mut leftmost = None;
        for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
            let text = value.to_str().map_err(|_| Malformed::NotText)?;
            for entry in text.rsplit(',') {
                let entry = entry.trim_matches([' ', '\t']);
                // HTTP list syntax allows empty elements, which name no one.
                if entry.is_empty() {
                    continue;
                }
                let address = parse_forwarded_entry(entry).ok_or(Malformed::NotAnAddress)?;
                if !self.contains(address) {
                    return Ok(Some(address));
                }
                leftmost = Some(address);
            }
        }
        Ok(leftmost)
    }
}

/// The reason an `X-Forwarded-For` header was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Malformed {
    /// A header value with bytes that are not visible ASCII.
    NotText,
    /// An entry that is not an IP address with an optional port.
    NotAnAddress,
}

impl Malformed {
    fn code(self) -> &'static str {
        match self {
            Malformed::NotText => "not_text",
            Malformed::NotAnAddress => "not_an_address",
        }
    }
}

/// Parses one `X-Forwarded-For` entry: an IPv4 address, an IPv6 address,
/// either with a port (`1.2.3.4:5678`, `[2001:db8::1]:80`), or a bracketed
/// IPv6 address without one. Returns the canonical address, so an
/// IPv4-mapped IPv6 address becomes IPv4.
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    if let Some(rest) = entry.strip_prefix('[') {
        let (address, after) = rest.split_once(']')?;
        if !after.is_empty() {
            parse_port(after.strip_prefix(':')?)?;
        }
        return address
            .parse::<Ipv6Addr>()
            .ok()
            .map(|address| IpAddr::V6(address).to_canonical());
    }
    if let Ok(address) = entry.parse::<IpAddr>() {
        return Some(address.to_canonical());
    }
    // With one colon this can only be IPv4 with a port; an unbracketed IPv6
    // address with a port is ambiguous and rejected.
    let (address, port) = entry.split_once(':')?;
    parse_port(port)?;
    address.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn trusted(list: &str) -> TrustedProxies {
        list.parse().expect("valid trusted proxies")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("valid IP address")
    }

    fn forwarded(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn catch_all_ranges_are_listed() {
        let proxies = trusted("10.0.0.0/8,0.0.0.0/0,::/0,::1");
        let none = trusted("10.0.0.0/8,::1");

        assert_eq!(proxies.catch_all_ranges(), ["0.0.0.0/0", "::/0"]);
        assert!(none.catch_all_ranges().is_empty());
    }

    #[test]
    fn trusted_proxies_parse_addresses_and_ranges() {
        let proxies = trusted(" 10.0.0.0/8 , 127.0.0.1,fd00::/8,\t::1 ");

        assert!(proxies.contains(ip("10.255.0.1")));
        assert!(proxies.contains(ip("127.0.0.1")));
        assert!(proxies.contains(ip("fd12::1")));
        assert!(proxies.contains(ip("::1")));
        assert!(!proxies.contains(ip("11.0.0.1")));
        assert!(!proxies.contains(ip("127.0.0.2")));
        assert!(!proxies.contains(ip("fe80::1")));
    }

    #[test]
    fn trusted_proxies_ignore_host_bits() {
        let proxies = trusted("10.1.2.3/16");

        assert!(proxies.contains(ip("10.1.200.1")));
        assert!(!proxies.contains(ip("10.2.0.1")));
    }

    #[test]
    fn trusted_proxies_match_ipv4_mapped_addresses() {
        let ipv4_list = trusted("10.0.0.0/8");
        let mapped_list = trusted("::ffff:192.168.0.0/112");

        assert!(ipv4_list.contains(ip("::ffff:10.1.2.3")));
        assert!(mapped_list.contains(ip("192.168.5.5")));
        assert!(!mapped_list.contains(ip("192.169.0.1")));
    }

    #[test]
    fn blank_trusted_proxies_trust_no_one() {
        assert!(trusted("").is_empty());
        assert!(trusted("  ").is_empty());
    }

    #[test]
    fn invalid_trusted_proxies_name_the_entry() {
        let cases = [
            ("10.0.0.0/33", "\"10.0.0.0/33\""),
            ("10.0.0.0/8,example.com", "\"example.com\""),
            ("10.0.0", "\"10.0.0\""),
            ("::1/129", "\"::1/129\""),
            ("10.0.0.1:80", "\"10.0.0.1:80\""),
            ("10.0.0.0/8,,127.0.0.1", "empty entry"),
            ("10.0.0.0/8,", "empty entry"),
        ];

        for (list, expected) in cases {
            let message = list.parse::<TrustedProxies>().expect_err(list).to_string();
            assert!(message.contains(expected), "{list}: {message}");
        }
    }

    #[test]
    fn forwarded_entries_parse() {
        let cases = [
            ("1.2.3.4", Some("1.2.3.4")),
            ("1.2.3.4:5678", Some("1.2.3.4")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("[2001:db8::1]:443", Some("2001:db8::1")),
            ("[::1]:80", Some("::1")),
            ("::ffff:1.2.3.4", Some("1.2.3.4")),
            ("[::ffff:1.2.3.4]:80", Some("1.2.3.4")),
            ("unknown", None),
            ("_hidden", None),
            ("1.2.3.4:", None),
            ("1.2.3.4:http", None),
            ("1.2.3.4:65536", None),
            ("1.2.3.4:+80", None),
            ("[1.2.3.4]", None),
            ("[2001:db8::1", None),
            ("[2001:db8::1]80", None),
            ("fe80::1%eth0", None),
            ("1.2.3", None),
        ];

        for (entry, expected) in cases {
            assert_eq!(
                parse_forwarded_entry(entry),
                expected.map(ip),
                "entry {entry:?}"
            );
        }
    }

    #[test]
    fn untrusted_peer_header_is_ignored() {
        let proxies = trusted("10.0.0.0/8");
        let headers = forwarded(&["1.1.1.1"]);

        assert_eq!(
            proxies.client_address(ip("203.0.113.9"), &headers),
            ip("203.0.113.9")
        );
        assert_eq!(
            TrustedProxies::default().client_address(ip("10.0.0.1"), &headers),
            ip("10.0.0.1"),
            "an empty list trusts no peer"
        );
    }

    #[test]
    fn rightmost_untrusted_entry_is_the_client() {
        let proxies = trusted("10.0.0.0/8");
        let peer = ip("10.0.0.1");
        let cases = [
            ("one entry", vec!["203.0.113.9"], "203.0.113.9"),
            (
                "spoofed entry on the left",
                vec!["198.51.100.1, 203.0.113.9"],
                "203.0.113.9",
            ),
            (
                "trusted hops on the right",
                vec!["198.51.100.1, 203.0.113.9, 10.1.1.1,10.2.2.2"],
                "203.0.113.9",
            ),
            (
                "headers combined in order",
                vec!["198.51.100.1", "203.0.113.9, 10.1.1.1"],
                "203.0.113.9",
            ),
            (
                "last header decides",
                vec!["203.0.113.9", "198.51.100.1"],
                "198.51.100.1",
            ),
            (
                "garbage left of the client",
                vec!["unknown, not-an-ip, 203.0.113.9"],
                "203.0.113.9",
            ),
            (
                "empty elements",
                vec![", 203.0.113.9,, 10.1.1.1 ,", ""],
                "203.0.113.9",
            ),
            ("with a port", vec!["203.0.113.9:5678"], "203.0.113.9"),
            ("IPv6 with a port", vec!["[2001:db8::7]:80"], "2001:db8::7"),
            ("IPv6", vec!["2001:db8::7, 10.1.1.1"], "2001:db8::7"),
            ("tabs and spaces", vec!["\t203.0.113.9 \t"], "203.0.113.9"),
            (
                "every entry trusted",
                vec!["10.9.9.9, 10.1.1.1"],
                "10.9.9.9",
            ),
        ];

        for (description, values, expected) in cases {
            let headers = forwarded(&values);
            assert_eq!(
                proxies.client_address(peer, &headers),
                ip(expected),
                "{description}"
            );
        }
    }

    #[test]
    fn malformed_header_falls_back_to_the_peer() {
        let proxies = trusted("10.0.0.0/8");
        let peer = ip("10.0.0.1");
        let cases = [
            ("missing", vec![]),
            ("empty", vec![""]),
            ("only commas", vec![" , ,"]),
            ("unknown", vec!["unknown"]),
            ("unknown right of a client", vec!["203.0.113.9, unknown"]),
            ("hostname", vec!["client.example"]),
            ("invalid IPv6", vec!["2001:db8:::80"]),
            ("bad port", vec!["203.0.113.9:99999"]),
            ("garbage in the last header", vec!["203.0.113.9", "nope"]),
        ];

        for (description, values) in cases {
            let headers = forwarded(&values);
            assert_eq!(
                proxies.client_address(peer, &headers),
                peer,
                "{description}"
            );
        }
    }

    #[test]
    fn non_text_header_falls_back_to_the_peer() {
        let proxies = trusted("10.0.0.0/8");
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_bytes(b"203.0.113.9\xff").expect("opaque header value");
        headers.append(X_FORWARDED_FOR, value);

        assert_eq!(
            proxies.client_address(ip("10.0.0.1"), &headers),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn ipv4_mapped_peer_matches_ipv4_range() {
        let proxies = trusted("127.0.0.1");

        assert_eq!(
            proxies.client_address(ip("::ffff:127.0.0.1"), &forwarded(&["203.0.113.9"])),
            ip("203.0.113.9")
        );
        assert_eq!(
            proxies.client_address(ip("::ffff:127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
    }
}
