//! Fragmented messages through a real two-shard nexus, which assembles them
//! itself: the pieces arrive as one message (control frames may come in
//! between), UTF-8 may split across fragments, and every misuse closes only
//! the offender with the code tungstenite would give.

mod common;

use common::{receive, Bystander, Client, Nexus};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::Message;

fn text(bytes: &[u8], first: bool, fin: bool) -> Message {
    let opcode = if first {
        OpCode::Data(Data::Text)
    } else {
        OpCode::Data(Data::Continue)
    };
    Message::Frame(Frame::message(bytes.to_vec(), opcode, fin))
}

/// A publisher sending `pieces` of one `1t` on channel `frag`, and a
/// subscriber on it.
fn publish_in_pieces(nexus: &mut Nexus, pieces: &[&[u8]]) -> (Client, Client) {
    let mut sub = Client::named(nexus, "sub");
    sub.subscribe("frag");
    nexus.wait_subscribers("frag", 1);
    let mut publisher = Client::named(nexus, "pub");
    for (i, piece) in pieces.iter().enumerate() {
        publisher.send_message(text(piece, i == 0, i + 1 == pieces.len()));
        if i == 0 {
            // A ping between fragments is answered and changes nothing.
            publisher.send_message(Message::Ping(b"between".to_vec().into()));
        }
    }
    (sub, publisher)
}

#[test]
fn fragments_arrive_as_one_message_with_utf8_split_across_them() {
    let mut nexus = Nexus::start(&[]);
    // "1t|4|frag|9|héllo→" split inside both multi-byte characters.
    let whole = "1t|4|frag|9|héllo→".as_bytes();
    let (a, rest) = whole.split_at(14); // inside "é"
    let (b, c) = rest.split_at(5); // inside "→"
    let (mut sub, mut publisher) = publish_in_pieces(&mut nexus, &[a, b, c]);
    assert_eq!(sub.recv(), receive("pub", "frag", "héllo→"));
    // The publisher's connection is whole: an ordinary message follows.
    publisher.publish("frag", "after");
    assert_eq!(sub.recv(), receive("pub", "frag", "after"));
}

#[test]
fn a_large_message_in_many_fragments_is_delivered_whole() {
    let mut nexus = Nexus::start(&[]);
    let body = "z".repeat(60_000);
    let whole = format!("1t|4|frag|{}|{body}", body.len());
    let pieces: Vec<&[u8]> = whole.as_bytes().chunks(7_000).collect();
    let (mut sub, _publisher) = publish_in_pieces(&mut nexus, &pieces);
    assert_eq!(sub.recv(), receive("pub", "frag", &body));
}

#[test]
fn misused_fragments_close_only_the_offender() {
    let mut nexus = Nexus::start(&[]);
    let mut bystander = Bystander::new(&mut nexus);
    let cases: [(&str, Vec<Message>, u16); 5] = [
        (
            "a continuation with nothing to continue",
            vec![text(b"1h|1|a", false, true)],
            1002,
        ),
        (
            "a new message before the last fragment",
            vec![text(b"1h|", true, false), text(b"1h|1|a", true, true)],
            1002,
        ),
        (
            "invalid UTF-8 across fragments",
            vec![text(b"1h|2|\xff", true, false), text(b"\xfe", false, true)],
            1007,
        ),
        (
            "fragments adding up past the message limit",
            vec![
                text(&[b'x'; 40_000], true, false),
                text(&[b'x'; 40_000], false, true),
            ],
            1009,
        ),
        (
            "a fragmented binary message",
            vec![
                Message::Frame(Frame::message(
                    b"1h|".to_vec(),
                    OpCode::Data(Data::Binary),
                    false,
                )),
                text(b"1|a", false, true),
            ],
            1003,
        ),
    ];
    for (what, frames, code) in cases {
        let mut offender = Client::connect(&nexus);
        for frame in frames {
            offender.send_message(frame);
        }
        let (got, reason) = offender.expect_close();
        assert_eq!(got, code, "{what}: closed with {got} {reason:?}");
        bystander.still_served();
    }
}
