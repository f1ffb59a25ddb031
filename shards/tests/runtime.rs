//! The runtime through real parts: two pinned shards, one port, real sockets.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use futures_lite::StreamExt;
use shards::{available_cores, launch, RuntimeConfig, Shard};

fn two_shards() -> RuntimeConfig {
    let cores = available_cores();
    RuntimeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        second_listen: None,
        cores: vec![cores[0], cores[cores.len() - 1]],
        ring_size: 4,
        backlog: 256,
        preempt_timer: RuntimeConfig::DEFAULT_PREEMPT_TIMER,
    }
}

/// Every shard sends more messages than a ring holds to every other shard;
/// all arrive, in order, because a full ring makes the sender wait.
#[test]
fn rings_deliver_everything_in_order_through_back_pressure() {
    const COUNT: u64 = 1_000;
    let running = launch(&two_shards(), |mut shard: Shard<(usize, u64)>| async move {
        let me = shard.id();
        let inbound = shard.rings.take_inbound();
        let receiver = glommio::spawn_local(async move {
            let mut got = Vec::new();
            for (from, mut rx) in inbound {
                let mut expected = 0;
                while expected < COUNT {
                    let (sender, seq) = rx.next().await.expect("ring open");
                    assert_eq!(sender, from);
                    assert_eq!(seq, expected);
                    expected += 1;
                }
                got.push((from, expected));
            }
            got
        });
        for peer in shard.rings.peers().collect::<Vec<_>>() {
            for seq in 0..COUNT {
                shard.rings.send(peer, (me, seq), false).await.unwrap();
            }
        }
        let got = receiver.await;
        (me, got, shard.rings.stats())
    })
    .unwrap();
    let mut results: Vec<_> = running.join().into_iter().map(Result::unwrap).collect();
    results.sort_by_key(|r| r.0);
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].1, vec![(1, COUNT)]);
    assert_eq!(results[1].1, vec![(0, COUNT)]);
    for (_, _, stats) in &results {
        assert_eq!(stats.sent, COUNT);
    }
}

/// SO_REUSEPORT spreads connections over both shards listening on one port.
#[test]
fn connections_are_spread_across_shards() {
    const CONNECTIONS: usize = 64;
    let running = launch(&two_shards(), |mut shard: Shard<usize>| async move {
        let me = shard.id();
        let inbound = shard.rings.take_inbound();
        let mut accepted = 0usize;
        // Each shard echoes its id to the connections it accepts until the
        // test client says it is done by connecting with a 'q' byte.
        let mut incoming = shard.listener.incoming();
        let done = loop {
            let mut stream = incoming.next().await.unwrap().unwrap();
            let mut byte = [0u8; 1];
            futures_lite::AsyncReadExt::read_exact(&mut stream, &mut byte)
                .await
                .unwrap();
            if byte[0] == b'q' {
                break true;
            }
            accepted += 1;
            futures_lite::AsyncWriteExt::write_all(&mut stream, &[me as u8])
                .await
                .unwrap();
        };
        drop(inbound);
        (me, accepted, done)
    })
    .unwrap();
    let addr = running.local_addr();
    let mut per_shard = [0usize; 2];
    for _ in 0..CONNECTIONS {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"x").unwrap();
        let mut id = [0u8; 1];
        s.read_exact(&mut id).unwrap();
        per_shard[id[0] as usize] += 1;
    }
    // Stop both shards: keep sending 'q' until each has received one.
    let mut stopped = 0;
    let mut attempts = 0;
    while stopped < 2 && attempts < 1_000 {
        attempts += 1;
        // Refused: no listener is left, so both shards have stopped (the
        // last one's answer may have been a timeout rather than an end of
        // stream).
        let Ok(mut s) = TcpStream::connect(addr) else {
            break;
        };
        if s.write_all(b"q").is_err() {
            continue;
        }
        // A stopped shard's listener closes; count answers from live ones.
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 1];
        if let Ok(0) = s.read(&mut buf) {
            stopped += 1;
        }
    }
    let results: Vec<_> = running.join().into_iter().map(Result::unwrap).collect();
    assert!(per_shard[0] > 0 && per_shard[1] > 0, "{per_shard:?}");
    let accepted: usize = results.iter().map(|r| r.1).sum();
    assert_eq!(accepted, CONNECTIONS);
}

/// A retired listener hands over what it had queued and leaves the
/// SO_REUSEPORT group at once, while the io_uring accept is still pending:
/// every later connection goes to the group's other socket.
#[test]
fn a_retired_listener_keeps_its_queue_and_leaves_the_group() {
    use shards::listener::{adopt, bind_reuseport, Accepted};
    let mut sockets = bind_reuseport("127.0.0.1:0".parse().unwrap(), 2, 64).unwrap();
    let addr = sockets[0].local_addr().unwrap().as_socket().unwrap();
    let other = sockets.pop().unwrap();
    let retiring = sockets.pop().unwrap();
    let cores = available_cores();
    let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(cores[0]))
        .spawn(move || async move {
            let listener = adopt(retiring);
            // Connections queue up on both sockets before anything accepts.
            let clients: Vec<TcpStream> =
                (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
            // Stop at once: what is queued still comes out, as connections
            // or with the retirement.
            let mut taken = 0;
            let queued = loop {
                match listener.accept_until(async {}).await {
                    Accepted::Connection(c) => {
                        c.unwrap();
                        taken += 1;
                    }
                    Accepted::Retired(q) => break q.len(),
                }
            };
            // Still open (and its io_uring accept may linger), but out of
            // the group: these all land on the other socket.
            let later: Vec<TcpStream> =
                (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
            let result = (taken + queued, clients, later);
            drop(listener);
            result
        })
        .unwrap();
    let (on_retired, clients, later) = handle.join().unwrap();
    other.set_nonblocking(true).unwrap();
    let mut on_other = 0;
    while other.accept().is_ok() {
        on_other += 1;
    }
    assert!(
        on_retired > 0,
        "the kernel spread none to the retired socket"
    );
    // None lost (what the retired socket had, it handed over), and every
    // later connection went to the other socket.
    assert_eq!(
        on_other,
        clients.len() - on_retired + later.len(),
        "retired socket took {on_retired}"
    );
}

/// The mesh addresses at most `MAX_SHARDS` shards (peer sets are 64-bit
/// masks): more is a configuration error, before anything starts.
#[test]
fn more_shards_than_the_mesh_addresses_are_refused() {
    let config = RuntimeConfig {
        cores: vec![0; shards::MAX_SHARDS + 1],
        ..two_shards()
    };
    let result = launch(&config, |_shard: Shard<u8>| async {});
    assert!(
        matches!(result, Err(shards::LaunchError::Config(_))),
        "{:?}",
        result.err()
    );
}

/// A message that finds its ring full is counted once, however many times
/// the pump then finds the ring still full; nothing is lost or reordered.
#[test]
fn a_full_ring_is_counted_once_per_message() {
    const COUNT: u64 = 50;
    #[derive(Debug)]
    struct Seq(u64);
    impl shards::Weighed for Seq {
        fn weight(&self) -> usize {
            8
        }
    }
    let config = RuntimeConfig {
        ring_size: 1,
        ..two_shards()
    };
    let running = launch(&config, |mut shard: Shard<Seq>| async move {
        let inbound = shard.rings.take_inbound();
        let me = shard.id();
        let links = shards::Links::new(
            shard.rings,
            usize::MAX,
            std::rc::Rc::new(shards::NothingDeferred),
        );
        if me == 1 {
            // The receiver starts late, so the sender's backlog fills.
            glommio::timer::sleep(Duration::from_millis(100)).await;
            let (from, ring) = inbound.into_iter().next().unwrap();
            let got = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
            let sink = got.clone();
            let drain = links.drain(
                from,
                ring,
                |_| true,
                move |_, Seq(n)| sink.borrow_mut().push(n),
            );
            futures_lite::future::or(drain, async {
                while got.borrow().len() < COUNT as usize {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
            let got = got.borrow().clone();
            assert_eq!(got, (0..COUNT).collect::<Vec<_>>());
            return None;
        }
        for n in 0..COUNT {
            links.send(1, Seq(n));
        }
        links.flush().await;
        drop(inbound);
        Some(links.stats())
    })
    .unwrap();
    let results: Vec<_> = running.join().into_iter().map(Result::unwrap).collect();
    let stats = results
        .into_iter()
        .flatten()
        .next()
        .expect("the sender's stats");
    assert_eq!(stats.sent, COUNT);
    assert!(
        stats.full_waits > 0 && stats.full_waits < COUNT,
        "each queued message counted once: {stats:?}"
    );
}
