//! The shared state of the classic design: every connection and every
//! channel in one structure, reached through one lock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use ease_chat_nexus::protocol::frame::truncate_close_reason;
use ease_chat_nexus::protocol::{self, Message as Parsed};
use tokio::sync::mpsc::UnboundedSender;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// What the read loop does after a text frame.
#[derive(Debug)]
pub enum Verdict {
    /// Keep reading.
    Continue,
    /// Close with this code and reason.
    Close(u16, String),
}

/// One connection's entry.
#[derive(Debug)]
struct Client {
    name: Option<Arc<str>>,
    tx: UnboundedSender<Message>,
    channels: HashSet<String>,
}

/// Connections and channels (channel -> subscriber -> expiry).
#[derive(Debug, Default)]
pub struct Hub {
    next_id: u64,
    clients: HashMap<u64, Client>,
    channels: HashMap<String, HashMap<u64, Instant>>,
}

impl Hub {
    /// Adds a connection whose deliveries go to `tx`; returns its id.
    pub fn register(&mut self, tx: UnboundedSender<Message>) -> u64 {
        self.next_id += 1;
        let client = Client {
            name: None,
            tx,
            channels: HashSet::new(),
        };
        self.clients.insert(self.next_id, client);
        self.next_id
    }

    /// Removes a connection and its subscriptions (only its own).
    pub fn unregister(&mut self, id: u64) {
        let Some(client) = self.clients.remove(&id) else {
            return;
        };
        for channel in client.channels {
            self.unsubscribe(id, &channel);
        }
    }

    fn unsubscribe(&mut self, id: u64, channel: &str) {
        if let Some(subscribers) = self.channels.get_mut(channel) {
            subscribers.remove(&id);
            if subscribers.is_empty() {
                self.channels.remove(channel);
            }
        }
    }

    /// Drops every subscription whose time to live has passed.
    pub fn purge_expired(&mut self) {
        let now = Instant::now();
        let mut ended = Vec::new();
        for (channel, subscribers) in &mut self.channels {
            subscribers.retain(|id, expiry| {
                let live = *expiry > now;
                if !live {
                    ended.push((*id, channel.clone()));
                }
                live
            });
        }
        self.channels
            .retain(|_, subscribers| !subscribers.is_empty());
        for (id, channel) in ended {
            if let Some(client) = self.clients.get_mut(&id) {
                client.channels.remove(&channel);
            }
        }
    }

    /// Handles one client text frame.
    pub fn on_text(&mut self, id: u64, text: &str) -> Verdict {
        let message = match protocol::parse(text) {
            Ok(message) => message,
            Err(e) => return Verdict::Close(e.close_code(), e.to_string()),
        };
        let identified = self.clients.get(&id).is_some_and(|c| c.name.is_some());
        match message {
            Parsed::Hello { name } => {
                if let Some(client) = self.clients.get_mut(&id) {
                    client.name = Some(name.into());
                }
            }
            Parsed::Subscribe { .. } | Parsed::Transmit { .. } if !identified => {
                return Verdict::Close(1008, "connection unidentified".into());
            }
            Parsed::Subscribe { channel, ttl } => {
                let client = self.clients.get_mut(&id).expect("registered");
                if ttl.is_zero() {
                    client.channels.remove(channel);
                    self.unsubscribe(id, channel);
                } else {
                    client.channels.insert(channel.to_string());
                    let expiry = Instant::now() + ttl;
                    self.channels
                        .entry(channel.to_string())
                        .or_default()
                        .insert(id, expiry);
                }
            }
            Parsed::Transmit { channel, text } => self.publish(id, channel, text),
            Parsed::Disconnect { reason } => {
                return Verdict::Close(1000, truncate_close_reason(reason).to_string())
            }
            Parsed::Receive { .. } => {}
            // The seed's design speaks v1 only, where these were malformed.
            _ => return Verdict::Close(1002, "malformed message".into()),
        }
        Verdict::Continue
    }

    /// Queues one `1r` for every live subscriber not named like the sender.
    fn publish(&self, id: u64, channel: &str, text: &str) {
        let Some(subscribers) = self.channels.get(channel) else {
            return;
        };
        let sender = self.clients[&id].name.clone().expect("identified");
        let payload = Utf8Bytes::from(
            Parsed::Receive {
                sender: &sender,
                channel,
                text,
            }
            .encode(),
        );
        let now = Instant::now();
        for (subscriber, expiry) in subscribers {
            if *expiry <= now {
                continue;
            }
            let Some(client) = self.clients.get(subscriber) else {
                continue;
            };
            if client.name.as_deref() == Some(&*sender) {
                continue;
            }
            let _ = client.tx.send(Message::Text(payload.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

    fn client(hub: &mut Hub) -> (u64, UnboundedReceiver<Message>) {
        let (tx, rx) = unbounded_channel();
        (hub.register(tx), rx)
    }

    fn texts(rx: &mut UnboundedReceiver<Message>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(Message::Text(t)) = rx.try_recv() {
            out.push(t.to_string());
        }
        out
    }

    #[test]
    fn publish_reaches_live_subscribers_except_the_senders_name() {
        let mut hub = Hub::default();
        let (alice, mut alice_rx) = client(&mut hub);
        let (twin, mut twin_rx) = client(&mut hub);
        let (bob, mut bob_rx) = client(&mut hub);
        for (id, name) in [(alice, "alice"), (twin, "alice"), (bob, "bob")] {
            assert!(matches!(
                hub.on_text(id, &format!("1h|{}|{name}", name.len())),
                Verdict::Continue
            ));
            assert!(matches!(hub.on_text(id, "1c|1|c|300|0"), Verdict::Continue));
        }
        hub.on_text(alice, "1t|1|c|2|hi");
        assert_eq!(texts(&mut bob_rx), vec!["1r|5|alice|1|c|2|hi"]);
        assert!(texts(&mut alice_rx).is_empty());
        assert!(texts(&mut twin_rx).is_empty(), "same name as the sender");
    }

    #[test]
    fn unsubscribe_expiry_and_unregister_end_deliveries() {
        let mut hub = Hub::default();
        let (publisher, _) = client(&mut hub);
        let (sub, mut sub_rx) = client(&mut hub);
        hub.on_text(publisher, "1h|1|p");
        hub.on_text(sub, "1h|1|s");
        hub.on_text(sub, "1c|1|c|300|0");
        hub.on_text(sub, "1c|1|c|0|0");
        hub.on_text(publisher, "1t|1|c|1|x");
        assert!(texts(&mut sub_rx).is_empty(), "0|0 unsubscribes");
        hub.on_text(sub, "1c|1|c|0|1");
        std::thread::sleep(std::time::Duration::from_millis(2));
        hub.on_text(publisher, "1t|1|c|1|x");
        assert!(texts(&mut sub_rx).is_empty(), "expired");
        hub.purge_expired();
        assert!(hub.channels.is_empty(), "expired subscriptions are freed");
        hub.on_text(sub, "1c|1|c|300|0");
        hub.unregister(sub);
        assert!(hub.channels.is_empty(), "closing removes its subscriptions");
    }

    #[test]
    fn errors_close_with_the_protocol_codes() {
        let mut hub = Hub::default();
        let (id, _) = client(&mut hub);
        assert!(matches!(
            hub.on_text(id, "1c|1|c|300|0"),
            Verdict::Close(1008, _)
        ));
        assert!(matches!(hub.on_text(id, "2h|1|a"), Verdict::Close(1002, _)));
        assert!(matches!(hub.on_text(id, "1h|9|a"), Verdict::Close(1002, _)));
        match hub.on_text(id, "1d|3|bye") {
            Verdict::Close(1000, reason) => assert_eq!(reason, "bye"),
            other => panic!("{other:?}"),
        }
    }
}
