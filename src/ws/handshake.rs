//! The opening handshake (RFC 6455 §4.2): an HTTP/1.1 upgrade request in, a `101` or an error response out.
//!
//! Parsing and validation are tungstenite's (`Request::try_parse`, `create_response`); this module adds the
//! answers a client deserves when it is refused: `426 Upgrade Required` with `Sec-WebSocket-Version: 13` for
//! a version we do not speak, `400 Bad Request` with the reason for anything else malformed, `431` for a
//! request too large to be an upgrade. It also answers what the client asks for beyond RFC 6455 itself:
//! permessage-deflate, when enabled, as [`super::extensions`] negotiates it, and a subprotocol
//! (`Sec-WebSocket-Protocol`): the first the client lists that the application speaks. A client asking only
//! for subprotocols the application does not speak gets none in the answer, and browsers then fail the
//! connection, as RFC 6455 §4.1 means them to.
//!
//! A valid upgrade comes back with its request and its prepared `101`, so that who may upgrade (origin,
//! budgets, authentication: [`crate::admission`] and the application's hook) is decided before the `101` is
//! written; [`refusal`] builds the answer when they say no.
//!
//! It must not read or write sockets (the connection does, under `SERVER_REQUEST_TIMEOUT`).

use tungstenite::error::{Error as WsError, ProtocolError as WsProtocolError};
use tungstenite::handshake::machine::TryParse;
use tungstenite::handshake::server::{create_response, write_response};
use tungstenite::http::HeaderValue;

use super::extensions::{self, PerMessageDeflate};

pub(crate) use tungstenite::handshake::server::Request;

/// The largest upgrade request accepted; browsers send well under 2 KiB.
pub(crate) const MAX_REQUEST_LEN: usize = 8 * 1024;

/// What to do with the bytes received so far on a new connection.
#[derive(Debug)]
pub(crate) enum Handshake {
    /// The request is not complete yet: read more.
    Incomplete,
    /// A valid upgrade: once admitted, write `response`, then treat `buf[consumed..]` as the first frame
    /// bytes.
    Accept {
        /// The request, for the admission checks.
        request: Box<Request>,
        /// The `101 Switching Protocols` response.
        response: Vec<u8>,
        /// Length of the request; later bytes are already WebSocket frames.
        consumed: usize,
        /// What `response` agreed to.
        agreed: Agreed,
    },
    /// Refuse: write `response` and close the connection.
    Reject {
        /// A complete HTTP error response.
        response: Vec<u8>,
        /// Why, for the log.
        reason: String,
    },
}

/// What the server may agree to in an upgrade.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Offerable<'a> {
    /// Whether permessage-deflate may be negotiated (`WEBSOCKET_ENABLE_DEFLATE`).
    pub(crate) deflate: bool,
    /// The subprotocols the application speaks ([`crate::Server::subprotocols`]).
    pub(crate) subprotocols: &'a [String],
}

/// What an upgrade agreed to beyond RFC 6455: 3 bytes, kept by the session for its whole life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// permessage-deflate's parameters, if it was negotiated.
    pub(crate) deflate: Option<PerMessageDeflate>,
    /// The subprotocol, as its index in [`Offerable::subprotocols`].
    pub(crate) subprotocol: Option<u8>,
}

/// Examines the bytes of a new connection, agreeing to what `offerable` allows.
pub(crate) fn respond(buf: &[u8], offerable: Offerable<'_>) -> Handshake {
    let (consumed, request) = match Request::try_parse(buf) {
        Ok(Some(parsed)) => parsed,
        Ok(None) if buf.len() >= MAX_REQUEST_LEN => {
            return reject(
                431,
                "Request Header Fields Too Large",
                "upgrade request too large",
                &[],
            )
        }
        Ok(None) => return Handshake::Incomplete,
        Err(e) => {
            return reject(
                400,
                "Bad Request",
                &format!("malformed upgrade request: {e}"),
                &[],
            )
        }
    };
    let version = request.headers().get("Sec-WebSocket-Version");
    if version.is_some_and(|v| v != "13") {
        return reject(
            426,
            "Upgrade Required",
            "unsupported WebSocket version (only 13 is spoken)",
            &[("Sec-WebSocket-Version", "13")],
        );
    }
    match create_response(&request) {
        Ok(mut response) => {
            let offers = request.headers().get_all("Sec-WebSocket-Extensions");
            let deflate = if offerable.deflate {
                extensions::negotiate(offers.iter().map(|v| v.as_bytes()))
            } else {
                None
            };
            if let Some(agreed) = deflate {
                let answer =
                    HeaderValue::from_str(&agreed.response()).expect("the answer is ASCII");
                response
                    .headers_mut()
                    .insert("Sec-WebSocket-Extensions", answer);
            }
            let asked = request.headers().get_all("Sec-WebSocket-Protocol");
            let subprotocol =
                choose_subprotocol(asked.iter().map(|v| v.as_bytes()), offerable.subprotocols);
            if let Some(index) = subprotocol {
                let name = &offerable.subprotocols[usize::from(index)];
                let answer = HeaderValue::from_str(name).expect("subprotocols are tokens");
                response
                    .headers_mut()
                    .insert("Sec-WebSocket-Protocol", answer);
            }
            let mut out = Vec::with_capacity(256);
            write_response(&mut out, &response).expect("writing to memory cannot fail");
            Handshake::Accept {
                request: Box::new(request),
                response: out,
                consumed,
                agreed: Agreed {
                    deflate,
                    subprotocol,
                },
            }
        }
        Err(WsError::Protocol(WsProtocolError::MissingSecWebSocketVersionHeader)) => reject(
            426,
            "Upgrade Required",
            "missing Sec-WebSocket-Version",
            &[("Sec-WebSocket-Version", "13")],
        ),
        Err(e) => reject(
            400,
            "Bad Request",
            &format!("not a WebSocket upgrade: {e}"),
            &[],
        ),
    }
}

/// The first subprotocol the client lists (in every `Sec-WebSocket-Protocol` line, in order: its order of
/// preference) that the application speaks, as an index into `spoken`. Names compare exactly.
fn choose_subprotocol<'a>(
    lines: impl IntoIterator<Item = &'a [u8]>,
    spoken: &[String],
) -> Option<u8> {
    lines
        .into_iter()
        .filter_map(|line| std::str::from_utf8(line).ok())
        .flat_map(|line| line.split(','))
        .find_map(|asked| spoken.iter().position(|s| s == asked.trim()))
        .and_then(|index| u8::try_from(index).ok())
}

fn reject(status: u16, text: &str, reason: &str, headers: &[(&str, &str)]) -> Handshake {
    Handshake::Reject {
        response: refusal(status, text, reason, headers),
        reason: reason.to_owned(),
    }
}

/// A complete HTTP error response that closes the connection: `status` `text`, the extra `headers`, and
/// `reason` as a plain-text body.
pub(crate) fn refusal(status: u16, text: &str, reason: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 {status} {text}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
        reason.len() + 1
    );
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(reason);
    response.push('\n');
    response.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deflate enabled, no subprotocol spoken.
    const DEFLATE: Offerable<'static> = Offerable {
        deflate: true,
        subprotocols: &[],
    };

    const GOOD: &str = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

    fn status(h: &Handshake) -> u16 {
        let bytes = match h {
            Handshake::Accept { response, .. } | Handshake::Reject { response, .. } => response,
            Handshake::Incomplete => return 0,
        };
        let line = String::from_utf8_lossy(bytes);
        line[9..12].parse().unwrap()
    }

    #[test]
    fn accepts_the_rfc_example_and_keeps_trailing_bytes() {
        let request = format!("{GOOD}Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n\x01");
        let h = respond(request.as_bytes(), DEFLATE);
        assert_eq!(status(&h), 101);
        let Handshake::Accept {
            response,
            consumed,
            agreed,
            ..
        } = h
        else {
            unreachable!()
        };
        let text = String::from_utf8(response).unwrap();
        assert!(text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{text}");
        assert!(
            text.contains("\r\nsec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"),
            "{text}"
        );
        assert!(agreed.deflate.is_some());
        assert_eq!(agreed.subprotocol, None);
        assert_eq!(consumed, request.len() - 1);
    }

    #[test]
    fn the_first_subprotocol_the_client_lists_that_the_application_speaks_is_chosen() {
        let spoken = ["chat.v2".to_owned(), "roomcast.v1".to_owned()];
        let offerable = Offerable {
            deflate: false,
            subprotocols: &spoken,
        };
        for (asked, chosen) in [
            (vec!["roomcast.v1"], Some(1)),
            (vec!["mqtt, roomcast.v1 , chat.v2"], Some(1)),
            (vec!["mqtt", "chat.v2, roomcast.v1"], Some(0)),
            (vec!["ROOMCAST.V1"], None),
            (vec!["mqtt"], None),
            (vec![], None),
        ] {
            let mut request = GOOD.to_owned();
            for line in &asked {
                request.push_str(&format!("Sec-WebSocket-Protocol: {line}\r\n"));
            }
            request.push_str("\r\n");
            let Handshake::Accept {
                response, agreed, ..
            } = respond(request.as_bytes(), offerable)
            else {
                panic!("refused: {asked:?}")
            };
            assert_eq!(agreed.subprotocol, chosen, "{asked:?}");
            let text = String::from_utf8(response).unwrap().to_ascii_lowercase();
            let answer =
                chosen.map(|i| format!("sec-websocket-protocol: {}\r\n", spoken[i as usize]));
            match answer {
                Some(answer) => assert!(text.contains(&answer.to_ascii_lowercase()), "{text}"),
                None => assert!(!text.contains("sec-websocket-protocol"), "{text}"),
            }
        }
    }

    #[test]
    fn deflate_is_answered_only_when_enabled_and_offered() {
        let offered = format!("{GOOD}Sec-WebSocket-Extensions: x-foo\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n");
        for (request, enabled, expected) in [
            (offered.clone(), true, true),
            (offered, false, false),
            (format!("{GOOD}\r\n"), true, false),
        ] {
            let Handshake::Accept {
                response, agreed, ..
            } = respond(
                request.as_bytes(),
                Offerable {
                    deflate: enabled,
                    subprotocols: &[],
                },
            )
            else {
                panic!("refused: {request}")
            };
            let text = String::from_utf8(response).unwrap().to_ascii_lowercase();
            assert_eq!(text.contains("permessage-deflate"), expected, "{text}");
            assert_eq!(agreed.deflate.is_some(), expected);
        }
    }

    #[test]
    fn waits_for_the_end_of_the_headers() {
        assert!(matches!(
            respond(GOOD.as_bytes(), DEFLATE),
            Handshake::Incomplete
        ));
    }

    #[test]
    fn wrong_version_is_426_with_the_supported_one() {
        let request = GOOD.replace("Version: 13", "Version: 8") + "\r\n";
        let h = respond(request.as_bytes(), DEFLATE);
        assert_eq!(status(&h), 426);
        let Handshake::Reject { response, .. } = h else {
            unreachable!()
        };
        assert!(String::from_utf8(response)
            .unwrap()
            .contains("Sec-WebSocket-Version: 13"));
    }

    #[test]
    fn malformed_requests_are_400() {
        for request in [
            GOOD.replace("GET", "POST"),
            GOOD.replace("Upgrade: websocket\r\n", ""),
            GOOD.replace("Connection: Upgrade", "Connection: keep-alive"),
            GOOD.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"),
            "GARBAGE\r\n".to_string(),
        ] {
            let h = respond(format!("{request}\r\n").as_bytes(), DEFLATE);
            assert_eq!(status(&h), 400, "{request}");
        }
    }

    #[test]
    fn oversized_requests_are_refused() {
        let request = format!("{GOOD}X-Filler: {}\r\n", "a".repeat(MAX_REQUEST_LEN));
        assert_eq!(status(&respond(request.as_bytes(), DEFLATE)), 431);
    }
}
