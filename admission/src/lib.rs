//! # admission
//!
//! Who may open a connection to a server, decided without I/O: caps on connections open at once in all,
//! per IP address and per subnet (a /24 of IPv4, a /64 of IPv6: what one customer of an ISP or one hosted
//! machine usually holds), and token buckets on new connections per address and per subnet. Time comes in
//! as an argument, so the same state machine serves the node's TCP listener (one thread, its driver's clock)
//! and the signaling server (many threads, behind a mutex).
//!
//! One attacker address can then hold at most `per_addr` of the `total` slots, one attacker subnet at most
//! `per_subnet`, and a newcomer from elsewhere always finds room while `total` exceeds what the subnets
//! present can hold.
//!
//! [`DialScopes`] is the other direction: which addresses a peer hands out the node may dial.
//!
//! Memory is bounded: at most `remembered` addresses and as many subnets are kept; an entry with nothing
//! open and a full bucket carries no information and is forgotten first. When the map is full of live
//! entries, new addresses are refused ([`Refused::Busy`]) rather than letting the map grow.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use dht_core::Instant;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

/// A rate: `per_sec` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added a second.
    pub per_sec: u32,
    /// Tokens a full bucket holds (what may be spent at once).
    pub burst: u32,
}

/// The caps of an [`Admission`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once in all.
    pub total: usize,
    /// Connections open at once from one address.
    pub per_addr: usize,
    /// Connections open at once from one subnet (/24, /64).
    pub per_subnet: usize,
    /// New connections one address may open.
    pub addr_rate: Rate,
    /// New connections one subnet may open.
    pub subnet_rate: Rate,
    /// Addresses (and, apart, subnets) remembered at most.
    pub remembered: usize,
}

impl Limits {
    /// The node's inbound TCP defaults: 256 connections, 16 per address, 64 per subnet; 4 new connections a
    /// second per address (16 at once), 16 per subnet (64 at once).
    pub fn node_inbound() -> Self {
        Limits {
            total: 256,
            per_addr: 16,
            per_subnet: 64,
            addr_rate: Rate { per_sec: 4, burst: 16 },
            subnet_rate: Rate { per_sec: 16, burst: 64 },
            remembered: 50_000,
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// All `total` slots are taken.
    #[error("all {0} connection slots are taken")]
    Full(usize),
    /// The address holds `per_addr` connections.
    #[error("{0} connections already open from this address")]
    AddrFull(usize),
    /// The subnet holds `per_subnet` connections.
    #[error("{0} connections already open from this subnet")]
    SubnetFull(usize),
    /// The address opened connections faster than its rate.
    #[error("this address opens connections too fast")]
    AddrRate,
    /// The subnet opened connections faster than its rate.
    #[error("this subnet opens connections too fast")]
    SubnetRate,
    /// Too many addresses or subnets are active at once to remember one more.
    #[error("too many addresses active at once")]
    Busy,
}

/// The subnet an address is counted in: the /24 of an IPv4 address (an IPv4-mapped IPv6 address counts as
/// its IPv4 address), the /64 of an IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subnet {
    /// The first three octets of an IPv4 address.
    V4([u8; 3]),
    /// The first eight octets of an IPv6 address.
    V6([u8; 8]),
}

impl Subnet {
    /// The subnet of `ip`.
    pub fn of(ip: IpAddr) -> Subnet {
        match canonical(ip) {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                Subnet::V4([o[0], o[1], o[2]])
            }
            IpAddr::V6(v6) => {
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                Subnet::V6(prefix)
            }
        }
    }
}

/// `ip` with an IPv4-mapped IPv6 address turned into its IPv4 address (a dual-stack listener sees IPv4
/// clients that way).
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A token bucket: `rate.per_sec` tokens a second up to `rate.burst`. Starts full.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    per_sec: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(rate: Rate, now: Instant) -> Self {
        TokenBucket {
            tokens: f64::from(rate.burst),
            per_sec: f64::from(rate.per_sec),
            burst: f64::from(rate.burst),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.last = self.last.max(now);
    }

    /// Whether a token is there at `now`, without taking it.
    pub fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }

    /// Takes a token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        let ready = self.ready(now);
        if ready {
            self.tokens -= 1.0;
        }
        ready
    }

    /// Takes `n` tokens if there are that many (a request of `n` bytes against a byte budget); `false`, and
    /// nothing taken, if not.
    pub fn take(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        let enough = self.tokens >= n;
        if enough {
            self.tokens -= n;
        }
        enough
    }

    /// Takes `n` tokens for something costly; the balance may go below zero, and nothing is allowed until it
    /// has refilled.
    pub fn charge(&mut self, n: f64, now: Instant) {
        self.refill(now);
        self.tokens -= n;
    }

    /// Whether the bucket is full at `now` (it remembers nothing a new bucket would not).
    pub fn is_full(&self, now: Instant) -> bool {
        self.tokens + now.saturating_since(self.last).as_secs_f64() * self.per_sec >= self.burst
    }
}

/// Open connections and the admission bucket of one address or subnet.
#[derive(Debug, Clone)]
struct Entry {
    open: usize,
    bucket: TokenBucket,
}

/// Entries keyed by address or subnet, bounded in number.
#[derive(Debug)]
struct Table<K> {
    entries: HashMap<K, Entry>,
    rate: Rate,
    cap: usize,
}

impl<K: Hash + Eq + Copy> Table<K> {
    fn new(rate: Rate, cap: usize) -> Self {
        Table { entries: HashMap::new(), rate, cap }
    }

    /// The entry of `key`, made if there is room (after forgetting entries that carry nothing).
    fn entry(&mut self, key: K, now: Instant) -> Option<&mut Entry> {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.cap {
            self.entries.retain(|_, e| e.open > 0 || !e.bucket.is_full(now));
            if self.entries.len() >= self.cap {
                return None;
            }
        }
        let rate = self.rate;
        Some(self.entries.entry(key).or_insert_with(|| Entry { open: 0, bucket: TokenBucket::new(rate, now) }))
    }

    fn release(&mut self, key: K) {
        if let Some(e) = self.entries.get_mut(&key) {
            e.open = e.open.saturating_sub(1);
        }
    }
}

/// A budget per address (bytes a second, say), in the same bounded table the admission rules keep: at
/// most `remembered` addresses, a full budget forgotten first, and a new address refused (nothing taken)
/// while the table is full of addresses that have spent some.
#[derive(Debug)]
pub struct Budgets {
    table: Table<IpAddr>,
}

impl Budgets {
    /// An empty table of budgets of `rate` each.
    pub fn new(rate: Rate, remembered: usize) -> Self {
        Budgets { table: Table::new(rate, remembered.max(1)) }
    }

    /// Takes `n` from `ip`'s budget at `now` if it has that much (see [`TokenBucket::take`]).
    pub fn take(&mut self, ip: IpAddr, n: f64, now: Instant) -> bool {
        self.table.entry(canonical(ip), now).is_some_and(|e| e.bucket.take(n, now))
    }
}

/// Admission state: see the crate's documentation.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    /// Addresses held to the total cap alone (see [`Admission::exempt`]).
    exempt: Vec<IpAddr>,
    open: usize,
    addrs: Table<IpAddr>,
    subnets: Table<Subnet>,
}

impl Admission {
    /// Nothing open yet.
    pub fn new(limits: Limits) -> Self {
        let addrs = Table::new(limits.addr_rate, limits.remembered.max(1));
        let subnets = Table::new(limits.subnet_rate, limits.remembered.max(1));
        Admission { limits, exempt: Vec::new(), open: 0, addrs, subnets }
    }

    /// Holds connections from `ip` to the total cap alone: for the node's own address, whose connections
    /// come from the same machine (other nodes a test or an operator runs there), which a per-address cap
    /// would otherwise count as one hostile peer.
    pub fn exempt(&mut self, ip: IpAddr) {
        self.exempt.push(canonical(ip));
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Admits a connection from `ip` at `now`, counting it until [`Admission::release`], or says why not.
    /// A refusal changes nothing but the memory of the address (a refused attempt costs no token).
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refused> {
        let ip = canonical(ip);
        let l = &self.limits;
        if self.open >= l.total {
            return Err(Refused::Full(l.total));
        }
        if self.exempt.contains(&ip) {
            self.open += 1;
            return Ok(());
        }
        let (per_addr, per_subnet) = (l.per_addr, l.per_subnet);
        let subnet = self.subnets.entry(Subnet::of(ip), now).ok_or(Refused::Busy)?;
        if subnet.open >= per_subnet {
            return Err(Refused::SubnetFull(per_subnet));
        }
        if !subnet.bucket.ready(now) {
            return Err(Refused::SubnetRate);
        }
        let addr = self.addrs.entry(ip, now).ok_or(Refused::Busy)?;
        if addr.open >= per_addr {
            return Err(Refused::AddrFull(per_addr));
        }
        if !addr.bucket.allow(now) {
            return Err(Refused::AddrRate);
        }
        addr.open += 1;
        let subnet = self.subnets.entries.get_mut(&Subnet::of(ip)).expect("made above");
        subnet.bucket.allow(now);
        subnet.open += 1;
        self.open += 1;
        Ok(())
    }

    /// A connection admitted from `ip` has closed.
    pub fn release(&mut self, ip: IpAddr) {
        let ip = canonical(ip);
        self.open = self.open.saturating_sub(1);
        if self.exempt.contains(&ip) {
            return;
        }
        self.addrs.release(ip);
        self.subnets.release(Subnet::of(ip));
    }

    /// Takes `tokens` more from `ip`'s admission bucket (a connection it opened broke a rule), so that it
    /// waits longer before the next one is admitted. Its subnet is not charged: neighbours did nothing.
    pub fn charge(&mut self, ip: IpAddr, tokens: f64, now: Instant) {
        if let Some(e) = self.addrs.entries.get_mut(&canonical(ip)) {
            e.bucket.charge(tokens, now);
        }
    }

    /// Connections open in all.
    pub fn open(&self) -> usize {
        self.open
    }

    /// Connections open from `ip`.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.addrs.entries.get(&canonical(ip)).map_or(0, |e| e.open)
    }

    /// Addresses and subnets remembered now (for tests of the memory bound).
    pub fn remembered(&self) -> (usize, usize) {
        (self.addrs.entries.len(), self.subnets.entries.len())
    }
}

/// Where an address leads, for deciding which advertised addresses a node may dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// This machine: 127.0.0.0/8, ::1.
    Loopback,
    /// A private network: 10/8, 172.16/12, 192.168/16, 100.64/10 (carrier-grade NAT), fc00::/7.
    Private,
    /// The local link: 169.254/16 (where clouds serve instance metadata), fe80::/10.
    LinkLocal,
    /// Nowhere a connection should go: unspecified, multicast, broadcast, 0/8, 240/4.
    Reserved,
    /// Anything else (the documentation ranges included, which namespace tests use as their internet).
    Public,
}

impl Scope {
    /// The scope of `ip` (an IPv4-mapped IPv6 address as its IPv4 address).
    pub fn of(ip: IpAddr) -> Scope {
        match canonical(ip) {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                if v4.is_loopback() {
                    Scope::Loopback
                } else if v4.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
                    Scope::Private
                } else if v4.is_link_local() {
                    Scope::LinkLocal
                } else if o[0] == 0 || o[0] >= 224 || v4.is_broadcast() {
                    Scope::Reserved
                } else {
                    Scope::Public
                }
            }
            IpAddr::V6(v6) => {
                let first = v6.segments()[0];
                if v6.is_loopback() {
                    Scope::Loopback
                } else if (first & 0xfe00) == 0xfc00 {
                    Scope::Private
                } else if (first & 0xffc0) == 0xfe80 {
                    Scope::LinkLocal
                } else if v6.is_unspecified() || v6.is_multicast() {
                    Scope::Reserved
                } else {
                    Scope::Public
                }
            }
        }
    }
}

/// Which scopes a node dials when a peer hands it an address: public ones always, reserved ones never,
/// and loopback, private or link-local ones only when one of the node's own addresses is in that scope
/// (its peers are there too) or its operator allows them. Otherwise any peer could make the swarm's
/// nodes connect to an operator's LAN, localhost services or cloud metadata endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DialScopes {
    loopback: bool,
    private: bool,
    link_local: bool,
}

impl DialScopes {
    /// The scopes of the node's own addresses (an unspecified address, as in a listener on 0.0.0.0, adds
    /// none).
    pub fn own(addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut s = DialScopes::default();
        for ip in addrs {
            match Scope::of(ip) {
                Scope::Loopback => s.loopback = true,
                Scope::Private => s.private = true,
                Scope::LinkLocal => s.link_local = true,
                Scope::Public | Scope::Reserved => {}
            }
        }
        s
    }

    /// Every scope but the reserved one (an operator's choice: a swarm on a LAN, a test).
    pub fn everything() -> Self {
        DialScopes { loopback: true, private: true, link_local: true }
    }

    /// Whether a dial to `ip` is allowed.
    pub fn allows(&self, ip: IpAddr) -> bool {
        match Scope::of(ip) {
            Scope::Public => true,
            Scope::Reserved => false,
            Scope::Loopback => self.loopback,
            Scope::Private => self.private,
            Scope::LinkLocal => self.link_local,
        }
    }
}

#[cfg(test)]
mod tests;
