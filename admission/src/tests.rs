use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn limits() -> Limits {
    Limits {
        total: 100,
        per_addr: 4,
        per_subnet: 10,
        addr_rate: Rate { per_sec: 2, burst: 8 },
        subnet_rate: Rate { per_sec: 5, burst: 20 },
        remembered: 1000,
    }
}

const T0: Instant = Instant::from_millis(1_000_000);

#[test]
fn one_address_holds_at_most_its_share_and_a_newcomer_still_gets_in() {
    let mut a = Admission::new(limits());
    let attacker = v4(203, 0, 113, 7);
    let admitted = (0..50).filter(|_| a.admit(attacker, T0).is_ok()).count();
    assert_eq!(admitted, 4);
    assert_eq!(a.admit(attacker, T0), Err(Refused::AddrFull(4)));
    assert_eq!(a.admit(v4(198, 51, 100, 1), T0), Ok(()), "another address is admitted");
    assert_eq!(a.open(), 5);
    assert_eq!(a.open_from(attacker), 4);
}

#[test]
fn a_subnet_holds_at_most_its_share() {
    let mut a = Admission::new(limits());
    let admitted = (1..=40).filter(|d| a.admit(v4(203, 0, 113, *d), T0).is_ok()).count();
    assert_eq!(admitted, 10);
    assert_eq!(a.admit(v4(203, 0, 113, 99), T0), Err(Refused::SubnetFull(10)));
    assert_eq!(a.admit(v4(203, 0, 114, 1), T0), Ok(()), "the next /24 is another subnet");
}

#[test]
fn ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() {
    let mut a = Admission::new(limits());
    let in_64 = |i: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, i));
    let admitted = (1..=40).filter(|i| a.admit(in_64(*i), T0).is_ok()).count();
    assert_eq!(admitted, 10);
    assert!(a.admit(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1)), T0).is_ok());

    let plain = v4(192, 0, 2, 1);
    let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
    for _ in 0..2 {
        a.admit(plain, T0).unwrap();
        a.admit(mapped, T0).unwrap();
    }
    assert_eq!(a.admit(mapped, T0), Err(Refused::AddrFull(4)), "one address either way");
    assert_eq!(a.open_from(plain), 4);
}

#[test]
fn the_rate_refills_and_a_refusal_costs_no_token() {
    let mut l = limits();
    l.per_addr = 1000;
    l.per_subnet = 1000;
    let mut a = Admission::new(l);
    let ip = v4(192, 0, 2, 9);
    for _ in 0..8 {
        a.admit(ip, T0).unwrap();
        a.release(ip);
    }
    assert_eq!(a.admit(ip, T0), Err(Refused::AddrRate));
    // Refused attempts at the same instant take nothing: half a second later one token (2/s) is there.
    for _ in 0..100 {
        assert!(a.admit(ip, T0).is_err());
    }
    let later = T0 + Duration::from_millis(500);
    assert_eq!(a.admit(ip, later), Ok(()));
    assert_eq!(a.admit(ip, later), Err(Refused::AddrRate));

    // The subnet's rate binds addresses that each stay under theirs.
    let mut a = Admission::new(Limits { per_addr: 1000, per_subnet: 1000, ..limits() });
    let admitted = (1..=60u8)
        .filter(|d| {
            let ok = a.admit(v4(198, 51, 100, *d), T0).is_ok();
            if ok {
                a.release(v4(198, 51, 100, *d));
            }
            ok
        })
        .count();
    assert_eq!(admitted, 20);
    assert_eq!(a.admit(v4(198, 51, 100, 200), T0), Err(Refused::SubnetRate));
}

#[test]
fn a_charged_address_waits() {
    let mut a = Admission::new(limits());
    let ip = v4(192, 0, 2, 3);
    a.admit(ip, T0).unwrap();
    a.release(ip);
    a.charge(ip, 10.0, T0);
    assert_eq!(a.admit(ip, T0 + Duration::from_secs(1)), Err(Refused::AddrRate));
    assert_eq!(a.admit(ip, T0 + Duration::from_secs(2)), Ok(()), "7 - 10 + 2 × 2 ≥ 1");
    assert_eq!(a.admit(v4(192, 0, 2, 4), T0), Ok(()), "the neighbour is not charged");
}

#[test]
fn the_total_cap_binds_and_release_frees_the_slot() {
    let mut a = Admission::new(Limits { total: 3, ..limits() });
    for d in 1..=3 {
        a.admit(v4(10, 0, d, 1), T0).unwrap();
    }
    assert_eq!(a.admit(v4(10, 0, 9, 1), T0), Err(Refused::Full(3)));
    a.release(v4(10, 0, 1, 1));
    assert_eq!(a.admit(v4(10, 0, 9, 1), T0), Ok(()));
}

#[test]
fn memory_is_bounded_and_idle_entries_are_forgotten() {
    let mut a = Admission::new(Limits { remembered: 50, total: 10_000, ..limits() });
    // 50 subnets each with an open connection fill the tables: the 51st is refused.
    for i in 0..50u8 {
        a.admit(v4(10, i, 0, 1), T0).unwrap();
    }
    assert_eq!(a.admit(v4(10, 200, 0, 1), T0), Err(Refused::Busy));
    assert_eq!(a.remembered(), (50, 50));
    // Closed and refilled, they carry nothing and make room.
    for i in 0..50u8 {
        a.release(v4(10, i, 0, 1));
    }
    let later = T0 + Duration::from_secs(10);
    assert_eq!(a.admit(v4(10, 200, 0, 1), later), Ok(()));
    let (addrs, subnets) = a.remembered();
    assert!(addrs <= 50 && subnets <= 50, "{addrs} {subnets}");
}

#[test]
fn time_going_backwards_refills_nothing() {
    let mut b = TokenBucket::new(Rate { per_sec: 1, burst: 1 }, T0);
    assert!(b.allow(T0));
    assert!(!b.allow(T0 - Duration::from_secs(100)));
    assert!(!b.allow(T0 + Duration::from_millis(500)));
    assert!(b.allow(T0 + Duration::from_millis(1000)));
}

#[test]
fn scopes_of_addresses() {
    let cases = [
        ("127.0.0.1", Scope::Loopback),
        ("::1", Scope::Loopback),
        ("::ffff:127.0.0.1", Scope::Loopback),
        ("10.1.2.3", Scope::Private),
        ("172.16.0.1", Scope::Private),
        ("172.32.0.1", Scope::Public),
        ("192.168.1.1", Scope::Private),
        ("100.64.0.1", Scope::Private),
        ("100.128.0.1", Scope::Public),
        ("fd00::1", Scope::Private),
        ("169.254.169.254", Scope::LinkLocal),
        ("fe80::1", Scope::LinkLocal),
        ("0.0.0.0", Scope::Reserved),
        ("224.0.0.1", Scope::Reserved),
        ("255.255.255.255", Scope::Reserved),
        ("::", Scope::Reserved),
        ("ff02::1", Scope::Reserved),
        ("203.0.113.5", Scope::Public),
        ("2001:db8::1", Scope::Public),
        ("8.8.8.8", Scope::Public),
    ];
    for (ip, scope) in cases {
        assert_eq!(Scope::of(ip.parse().unwrap()), scope, "{ip}");
    }
}

#[test]
fn a_node_dials_only_into_the_scopes_it_lives_in() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let public = DialScopes::own([ip("203.0.113.5")]);
    for no in ["127.0.0.1", "10.0.0.1", "192.168.1.1", "169.254.169.254", "fe80::1", "0.0.0.0", "::1"] {
        assert!(!public.allows(ip(no)), "{no}");
    }
    assert!(public.allows(ip("198.51.100.7")));
    let lan = DialScopes::own([ip("192.168.1.10")]);
    assert!(lan.allows(ip("192.168.1.11")) && lan.allows(ip("10.0.0.1")) && !lan.allows(ip("127.0.0.1")));
    let local = DialScopes::own([ip("127.0.0.1")]);
    assert!(local.allows(ip("127.0.0.2")) && !local.allows(ip("169.254.169.254")));
    assert!(!DialScopes::own([ip("0.0.0.0")]).allows(ip("10.0.0.1")));
    let all = DialScopes::everything();
    assert!(all.allows(ip("169.254.169.254")) && all.allows(ip("::1")) && !all.allows(ip("224.0.0.1")));
}

#[test]
fn an_exempt_address_is_held_to_the_total_alone() {
    let mut a = Admission::new(Limits { total: 30, ..limits() });
    let own = v4(127, 0, 0, 1);
    a.exempt(own);
    let admitted = (0..50).filter(|_| a.admit(own, T0).is_ok()).count();
    assert_eq!(admitted, 30, "past the per-address cap and rate, up to the total");
    for _ in 0..30 {
        a.release(own);
    }
    assert_eq!(a.open(), 0);
    assert_eq!(a.admit(v4(127, 0, 0, 2), T0), Ok(()), "its neighbours are not exempt from their own caps");
    let neighbours = (3..40).filter(|d| a.admit(v4(127, 0, 0, *d), T0).is_ok()).count();
    assert_eq!(neighbours, 9, "the /24's share, 10, less the one above");
}

#[test]
fn a_byte_budget_takes_all_or_nothing() {
    let mut b = TokenBucket::new(Rate { per_sec: 1000, burst: 4000 }, T0);
    assert!(b.take(3000.0, T0));
    assert!(!b.take(2000.0, T0), "1,000 left");
    assert!(b.take(1000.0, T0));
    assert!(b.take(1500.0, T0 + Duration::from_millis(1500)));
}

#[test]
fn budgets_per_address_are_bounded_in_memory() {
    let mut b = Budgets::new(Rate { per_sec: 100, burst: 1000 }, 2);
    assert!(b.take(v4(192, 0, 2, 1), 800.0, T0));
    assert!(!b.take(v4(192, 0, 2, 1), 800.0, T0), "200 left");
    assert!(b.take(v4(192, 0, 2, 2), 1000.0, T0));
    // Two addresses that spent some fill the table: a third waits until one has refilled.
    assert!(!b.take(v4(192, 0, 2, 3), 1.0, T0));
    assert!(b.take(v4(192, 0, 2, 3), 1.0, T0 + Duration::from_secs(10)));
}
