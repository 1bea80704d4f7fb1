//! A `roomcast.v1` client (the chat app's JSON dialect) for the tests: tungstenite's client asking for the
//! subprotocol in the upgrade as a browser does with `new WebSocket(url, "roomcast.v1")`.

use std::net::{SocketAddr, TcpStream};

use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::WebSocket;

use super::{recv_text, send_text, READ_TIMEOUT};

/// A `roomcast.v1` client that has read its welcome.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
    /// Its session id, from the welcome (`shard-n`).
    pub session: String,
    pub next_ref: u64,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT).expect("connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut request = format!("ws://{addr}/").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "roomcast.v1".parse().unwrap());
        let (ws, response) = tungstenite::client(request, stream).expect("handshake");
        assert_eq!(
            response.headers()["sec-websocket-protocol"],
            "roomcast.v1",
            "the subprotocol is agreed"
        );
        let mut client = Client {
            ws,
            session: String::new(),
            next_ref: 0,
        };
        let welcome = client.next();
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        client.session = welcome["payload"]["session"].as_str().unwrap().to_owned();
        client
    }

    /// The shard its session lives on, from the session id.
    pub fn shard(&self) -> usize {
        self.session.split('-').next().unwrap().parse().unwrap()
    }

    pub fn next(&mut self) -> Value {
        let text = recv_text(&mut self.ws);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// Sends `{"type": kind, "ref": <new>, "payload": payload}`; returns the ref.
    pub fn request(&mut self, kind: &str, payload: Value) -> String {
        self.next_ref += 1;
        let reference = self.next_ref.to_string();
        let event = json!({ "type": kind, "ref": reference, "payload": payload });
        send_text(&mut self.ws, &event.to_string());
        reference
    }

    /// The reply to `reference`, which must be the next event of type `kind`.
    pub fn reply(&mut self, reference: &str, kind: &str) -> Value {
        let event = self.next();
        assert_eq!(event["type"], kind, "{event}");
        assert_eq!(event["ref"], reference, "{event}");
        event["payload"].clone()
    }

    pub fn join(&mut self, room: &str, since: Option<&Value>) -> Value {
        let mut payload = json!({ "room": room });
        if let Some(since) = since {
            payload["since"] = since.clone();
        }
        let reference = self.request("room.join", payload);
        self.reply(&reference, "room.joined")
    }

    /// Publishes `text` (with `id`, if given) and returns the message event it receives back as a
    /// member and the ack's payload, in whichever order they come.
    pub fn say(&mut self, room: &str, text: &str, id: Option<&str>) -> (Value, Value) {
        let mut payload = json!({ "room": room, "text": text });
        if let Some(id) = id {
            payload["id"] = id.into();
        }
        let reference = self.request("chat.message", payload);
        let (mut message, mut ack) = (None, None);
        while message.is_none() || ack.is_none() {
            let event = self.next();
            match event["type"].as_str() {
                Some("chat.message") if event["payload"]["text"] == text => {
                    message = Some(event["payload"].clone())
                }
                Some("ack") => {
                    assert_eq!(event["ref"], reference, "{event}");
                    ack = Some(event["payload"].clone());
                }
                _ => panic!("unexpected {event}"),
            }
        }
        (message.unwrap(), ack.unwrap())
    }

    pub fn error_code(&mut self, kind: &str, payload: Value) -> String {
        let reference = self.request(kind, payload);
        let error = self.reply(&reference, "error");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        error["code"].as_str().unwrap().to_owned()
    }
}
