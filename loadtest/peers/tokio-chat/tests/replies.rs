//! The replies the load harness's smoke run does not reach, in roomcast's words: refusals, the default
//! room, escaped text, raw text; and a room going on after one member closed. (The smoke run itself is
//! `loadtest/tests/peer.rs`.)

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// How long any one reply may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

async fn start() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tokio_chat::serve(listener));
    addr
}

struct Client(WebSocketStream<TcpStream>);

impl Client {
    /// Connects and reads the welcome.
    async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (websocket, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), stream)
            .await
            .unwrap();
        let mut client = Client(websocket);
        client.expect(tokio_chat::WELCOME).await;
        client
    }

    async fn send(&mut self, text: &str) {
        self.0.send(Message::text(text)).await.unwrap();
    }

    /// The next message must be the text `want`, within [`REPLY_TIMEOUT`].
    async fn expect(&mut self, want: &str) {
        let next = timeout(REPLY_TIMEOUT, self.0.next())
            .await
            .unwrap_or_else(|_| panic!("no reply within {REPLY_TIMEOUT:?}, expected `{want}`"));
        match next {
            Some(Ok(Message::Text(got))) => assert_eq!(got.as_str(), want),
            other => panic!("expected `{want}`, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn refusals_are_in_roomcasts_words() {
    let mut client = Client::connect(start().await).await;
    client
        .send(r#"{"type":"chat.message","payload":{"room":"r","text":"hi"}}"#)
        .await;
    client.expect("message rejected: not a member of r").await;
    client.send(r#"{"type":"#).await;
    client
        .expect("invalid event: malformed JSON: EOF while parsing a value at line 1 column 8")
        .await;
    client.send(r#"{"payload":{}}"#).await;
    client
        .expect("invalid event: `type` must be a string")
        .await;
    client.send(r#"{"type":"chat.message"}"#).await;
    client.expect("message rejected: empty text").await;
}

#[tokio::test]
async fn raw_text_is_ignored_and_a_line_ping_answered() {
    let mut client = Client::connect(start().await).await;
    client.send("hello").await;
    client.send("[1, 2]").await;
    client.send("ping\n").await;
    // Had either raw text been answered, that answer would arrive before this pong.
    client.expect("pong").await;
}

#[tokio::test]
async fn a_room_defaults_to_general_and_escaped_text_arrives_decoded() {
    let mut client = Client::connect(start().await).await;
    client.send(r#"{"type":"room.join"}"#).await;
    client.expect("joined room: general").await;
    client
        .send(r#"{"type":"chat.message","payload":{"text":"say \"hi\"\u00e9"}}"#)
        .await;
    client.expect("room general: say \"hi\"é").await;
}

#[tokio::test]
async fn a_close_is_answered_and_the_room_serves_who_stays() {
    let addr = start().await;
    let join = r#"{"type":"room.join","payload":{"room":"r"}}"#;
    let mut stays = Client::connect(addr).await;
    stays.send(join).await;
    stays.expect("joined room: r").await;
    let mut goes = Client::connect(addr).await;
    goes.send(join).await;
    goes.expect("joined room: r").await;
    goes.0.close(None).await.unwrap();
    // The close handshake completes: the server answers, then the stream ends.
    let end = timeout(REPLY_TIMEOUT, async {
        while let Some(Ok(_)) = goes.0.next().await {}
    });
    end.await.expect("the server answers the close");
    stays
        .send(r#"{"type":"chat.message","payload":{"room":"r","text":"still here"}}"#)
        .await;
    stays.expect("room r: still here").await;
    stays
        .send(r#"{"type":"room.leave","payload":{"room":"r"}}"#)
        .await;
    stays.expect("left room: r").await;
}
