//! The loop over in-memory pipes, on a virtual clock: no sockets, no timers, the same run every time.

use super::*;
use dht_core::{Instant, Key, NodeId, Record, Request, RequestId, Response};
use dht_link::{Identity, LinkConfig};
use futures::executor::LocalPool;
use futures::future::LocalBoxFuture;
use futures::task::LocalSpawnExt;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Poll, Waker};

/// Time that moves only when a test says so.
#[derive(Clone, Default)]
struct VirtualClock(Rc<RefCell<Timeline>>);

#[derive(Default)]
struct Timeline {
    now_ms: u64,
    sleepers: Vec<Waker>,
}

impl VirtualClock {
    fn new() -> Self {
        let clock = VirtualClock::default();
        clock.0.borrow_mut().now_ms = 1_000_000;
        clock
    }

    fn advance(&self, ms: u64) {
        let sleepers = {
            let mut t = self.0.borrow_mut();
            t.now_ms += ms;
            std::mem::take(&mut t.sleepers)
        };
        sleepers.into_iter().for_each(Waker::wake);
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Instant {
        Instant::from_millis(self.0.borrow().now_ms)
    }

    fn sleep_until(&self, deadline: Instant) -> LocalBoxFuture<'static, ()> {
        let timeline = self.0.clone();
        Box::pin(futures::future::poll_fn(move |cx| {
            let mut t = timeline.borrow_mut();
            if t.now_ms >= deadline.as_millis() {
                Poll::Ready(())
            } else {
                t.sleepers.push(cx.waker().clone());
                Poll::Pending
            }
        }))
    }
}

/// Two ends of an in-memory pipe, each writing chunks of at most `chunk` bytes.
fn pipes(chunk: usize) -> (ChannelPipe, ChannelPipe) {
    let (a_out, b_inc) = mpsc::channel(4);
    let (b_out, a_inc) = mpsc::channel(4);
    (ChannelPipe::new(a_out, a_inc, chunk), ChannelPipe::new(b_out, b_inc, chunk))
}

fn links(clock: &VirtualClock, expected: Option<NodeId>) -> (Link, Link, [NodeId; 2]) {
    let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let cfg = LinkConfig::default();
    let la = Link::initiator(&a, expected.or(Some(b.node_id())), b"p", vec![], &cfg, clock.now()).unwrap();
    let lb = Link::responder(&b, b"p", vec![], &cfg, clock.now()).unwrap();
    (la, lb, [a.node_id(), b.node_id()])
}

/// Why each side's task ended (A's first), once it has.
type Ends = Rc<RefCell<[Option<Result<(), TransportError>>; 2]>>;

struct Pair {
    pool: LocalPool,
    clock: VirtualClock,
    a: PeerLink,
    b: PeerLink,
    ids: [NodeId; 2],
    ends: Ends,
}

/// Two links over an in-memory pipe, handshaken and started on a local pool.
fn pair(config: Config, chunk: usize) -> Pair {
    let clock = VirtualClock::new();
    let (la, lb, ids) = links(&clock, None);
    let (pa, pb) = pipes(chunk);
    let mut pool = LocalPool::new();
    let (oa, ob) = pool.run_until(async { futures::join!(handshake(pa, la, &clock), handshake(pb, lb, &clock)) });
    let ends: Ends = Rc::default();
    let mut peers = Vec::new();
    for (side, opened) in [oa.unwrap(), ob.unwrap()].into_iter().enumerate() {
        let (peer, task) = opened.start(config, clock.clone());
        let ends = ends.clone();
        pool.spawner().spawn_local(async move { ends.borrow_mut()[side] = Some(task.await) }).unwrap();
        peers.push(peer);
    }
    let b = peers.pop().unwrap();
    let a = peers.pop().unwrap();
    Pair { pool, clock, a, b, ids, ends }
}

fn ping(i: u64) -> Message {
    Message::Request { id: RequestId(i), body: Request::Ping }
}

#[test]
fn a_handshake_then_large_messages_both_ways_over_tiny_chunks() {
    let Pair { mut pool, mut a, mut b, ids, .. } = pair(Config::default(), 100);
    assert_eq!((a.remote.id, b.remote.id), (ids[1], ids[0]), "each side proved the other");
    let record = Record::unchecked(Key::from_bytes([1; 32]), vec![7; 100_000]);
    let store = Message::Request {
        id: RequestId(9),
        body: Request::Store { record: Box::new(record), ttl_secs: 60, cas: None },
    };
    let pong = Message::Response { id: RequestId(9), body: Response::Pong };
    let (at_b, at_a) = pool.run_until(async {
        a.tx.send(store.clone()).await.unwrap();
        let at_b = b.rx.next().await;
        b.tx.send(pong.clone()).await.unwrap();
        (at_b, a.rx.next().await)
    });
    assert_eq!((at_b, at_a), (Some(store), Some(pong)));
}

#[test]
fn a_peer_proving_another_key_is_refused() {
    let clock = VirtualClock::new();
    let someone_else = Identity::generate().unwrap().node_id();
    let (la, lb, ids) = links(&clock, Some(someone_else));
    let (pa, pb) = pipes(16 * 1024);
    let (ra, _rb) =
        futures::executor::block_on(async { futures::join!(handshake(pa, la, &clock), handshake(pb, lb, &clock)) });
    let err = ra.unwrap_err();
    assert!(
        matches!(err, TransportError::WrongPeer { expected, actual } if expected == someone_else && actual == ids[1]),
        "{err}"
    );
}

#[test]
fn the_handshake_ends_at_its_deadline_on_the_clock() {
    let clock = VirtualClock::new();
    let (_silent, lb, _) = links(&clock, None);
    let (_pa, pb) = pipes(16 * 1024);
    let result = Rc::new(RefCell::new(None));
    let mut pool = LocalPool::new();
    let (c, r) = (clock.clone(), result.clone());
    pool.spawner().spawn_local(async move { *r.borrow_mut() = Some(handshake(pb, lb, &c).await.map(|_| ())) }).unwrap();
    pool.run_until_stalled();
    clock.advance(LinkConfig::default().handshake_timeout.as_millis() as u64 - 1);
    pool.run_until_stalled();
    assert!(result.borrow().is_none(), "still waiting a millisecond before the deadline");
    clock.advance(1);
    pool.run_until_stalled();
    assert!(matches!(*result.borrow(), Some(Err(TransportError::Timeout("handshake")))), "{:?}", result.borrow());
}

/// The responder's loop, fed by hand by a sans-IO initiator: the third handshake message and a message
/// in one read, then garbage.
#[test]
fn messages_with_the_last_handshake_bytes_come_first_and_garbage_ends_the_link() {
    let clock = VirtualClock::new();
    let (mut la, lb, _) = links(&clock, None);
    let (ChannelPipe { out: mut to_b, inc: mut from_b, .. }, pb) = pipes(16 * 1024);
    let mut pool = LocalPool::new();
    let opened = pool.run_until(async {
        let responder = handshake(pb, lb, &clock).fuse();
        futures::pin_mut!(responder);
        let initiator = async {
            to_b.send(la.pending().to_vec()).await.unwrap();
            la.advance(la.pending().len());
            let msg2 = from_b.next().await.unwrap();
            assert!(la.feed(&msg2, clock.now()).unwrap().is_empty());
            assert!(la.is_open());
            la.send(&ping(1)).unwrap();
            to_b.send(la.pending().to_vec()).await.unwrap();
            la.advance(la.pending().len());
            futures::future::pending::<()>().await
        };
        futures::select! { r = responder => r.unwrap(), _ = initiator.fuse() => unreachable!() }
    });
    let (mut peer, task) = opened.start(Config::default(), clock.clone());
    let ended = Rc::new(RefCell::new(None));
    let e = ended.clone();
    pool.spawner().spawn_local(async move { *e.borrow_mut() = Some(task.await) }).unwrap();
    assert_eq!(pool.run_until(peer.rx.next()), Some(ping(1)), "the early message is delivered");
    pool.run_until(to_b.send(vec![0, 0, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9])).unwrap();
    pool.run_until_stalled();
    assert!(matches!(*ended.borrow(), Some(Err(TransportError::Link(_)))), "{:?}", ended.borrow());
    assert_eq!(pool.run_until(peer.rx.next()), None);
}

#[test]
fn a_peer_over_its_budget_is_read_at_the_budgets_rate_and_nothing_is_dropped() {
    let config = Config { peer_rate: 1000, peer_burst: 100, ..Config::default() };
    let Pair { mut pool, clock, a, mut b, .. } = pair(config, 16 * 1024);
    let got = Rc::new(Cell::new(0u64));
    let spawner = pool.spawner();
    let mut tx = a.tx.clone();
    spawner
        .spawn_local(async move {
            for i in 0..500 {
                tx.send(ping(i)).await.unwrap()
            }
        })
        .unwrap();
    let g = got.clone();
    spawner
        .spawn_local(async move {
            while b.rx.next().await.is_some() {
                g.set(g.get() + 1)
            }
        })
        .unwrap();
    pool.run_until_stalled();
    let at_once = got.get();
    assert!((100..=100 + COALESCE as u64).contains(&at_once), "the burst and one read: {at_once}");
    let mut ms = 0;
    while got.get() < 500 && ms < 10_000 {
        clock.advance(1);
        ms += 1;
        pool.run_until_stalled();
    }
    assert_eq!(got.get(), 500, "every message arrived");
    // 400 over the burst at 1,000 a second, less up to one read's worth delivered before each pause.
    assert!((400 - COALESCE as u64..=420).contains(&ms), "took {ms} ms of the clock");
    drop(a);
}

#[test]
fn answers_still_arrive_on_a_link_let_go_of_until_linger_ends() {
    for linger in [Duration::from_secs(1), Duration::ZERO] {
        let Pair { mut pool, clock, mut a, mut b, ends, .. } = pair(Config { linger, ..Config::default() }, 16 * 1024);
        pool.run_until(a.tx.send(ping(1))).unwrap();
        // A lets go of the link right after sending (replaced, or closed to make room) ...
        drop(a.tx);
        assert_eq!(pool.run_until(b.rx.next()), Some(ping(1)));
        pool.run_until_stalled();
        // ... and B answers on it half a second later.
        clock.advance(500);
        let pong = Message::Response { id: RequestId(1), body: Response::Pong };
        let _ = pool.run_until(b.tx.send(pong.clone()));
        pool.run_until_stalled();
        let answered = a.rx.next().now_or_never();
        if linger.is_zero() {
            assert_eq!(answered, Some(None), "closed at once: the answer is lost");
        } else {
            assert_eq!(answered, Some(Some(pong)), "the answer arrived");
            clock.advance(499);
            pool.run_until_stalled();
            assert!(ends.borrow()[0].is_none(), "still lingering");
            clock.advance(1);
            pool.run_until_stalled();
        }
        assert!(matches!(ends.borrow()[0], Some(Ok(()))), "linger {linger:?}: A closed: {:?}", ends.borrow()[0]);
        assert!(matches!(ends.borrow()[1], Some(Err(TransportError::Closed))), "B saw it close");
        assert_eq!(pool.run_until(b.rx.next()), None);
    }
}
