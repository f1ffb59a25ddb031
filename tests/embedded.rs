//! The nexus started in-process through [`ease_chat_nexus::run`], as the
//! binary does and as an application embedding it would: it serves real
//! clients, stops on [`Control::Stop`] (what SIGTERM becomes), and `run`
//! returns.

mod common;

use std::sync::mpsc;
use std::thread;

use common::{Client, PATIENCE};
use ease_chat_nexus::console::Control;
use ease_chat_nexus::{run, Config};

#[test]
fn run_serves_then_returns_after_a_stop() {
    let cores: Vec<usize> = shards::available_cores().into_iter().take(2).collect();
    let config = Config::new("127.0.0.1:0".parse().unwrap(), cores);
    let (control, control_rx) = crossbeam_channel::unbounded();
    let (listening, addr) = mpsc::channel();
    let control_tx = control.clone();
    let server = thread::spawn(move || {
        run(config, (control_tx, control_rx), move |addr| {
            listening.send(addr).unwrap();
        })
    });
    let addr = addr
        .recv_timeout(PATIENCE)
        .expect("run reports its address");

    let mut client = Client::connect_addr(addr);
    client.hello("embedder");
    client.send("1d|3|bye");
    assert_eq!(client.expect_close(), (1000, "bye".to_string()));

    let mut stays = Client::connect_addr(addr);
    stays.hello("stays");
    control.send(Control::Stop("embedded stop".into())).unwrap();
    assert_eq!(stays.expect_close(), (1000, "embedded stop".to_string()));
    let result = server.join().expect("run does not panic");
    assert!(result.is_ok(), "{result:?}");
}
