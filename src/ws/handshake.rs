//! The opening handshake (RFC 6455 §4.2): an HTTP/1.1 upgrade request in, a `101` or an error response out.
//!
//! Parsing and validation are tungstenite's (`Request::try_parse`, `create_response`); this module adds the
//! answers a client deserves when it is refused: `426 Upgrade Required` with `Sec-WebSocket-Version: 13` for
//! a version we do not speak, `400 Bad Request` with the reason for anything else malformed, `431` for a
//! request too large to be an upgrade. It also answers the extension offers: permessage-deflate, when
//! enabled, as [`super::extensions`] negotiates it.
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
        /// permessage-deflate as agreed in `response`, if it was.
        deflate: Option<PerMessageDeflate>,
    },
    /// Refuse: write `response` and close the connection.
    Reject {
        /// A complete HTTP error response.
        response: Vec<u8>,
        /// Why, for the log.
        reason: String,
    },
}

/// Examines the bytes of a new connection; `deflate_enabled` says whether permessage-deflate may be
/// negotiated.
pub(crate) fn respond(buf: &[u8], deflate_enabled: bool) -> Handshake {
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
            let deflate = if deflate_enabled {
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
            let mut out = Vec::with_capacity(256);
            write_response(&mut out, &response).expect("writing to memory cannot fail");
            Handshake::Accept {
                request: Box::new(request),
                response: out,
                consumed,
                deflate,
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
        let h = respond(request.as_bytes(), true);
        assert_eq!(status(&h), 101);
        let Handshake::Accept {
            response,
            consumed,
            deflate,
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
        assert!(deflate.is_some());
        assert_eq!(consumed, request.len() - 1);
    }

    #[test]
    fn deflate_is_answered_only_when_enabled_and_offered() {
        let offered = format!("{GOOD}Sec-WebSocket-Extensions: x-foo\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n");
        for (request, enabled, agreed) in [
            (offered.clone(), true, true),
            (offered, false, false),
            (format!("{GOOD}\r\n"), true, false),
        ] {
            let Handshake::Accept {
                response, deflate, ..
            } = respond(request.as_bytes(), enabled)
            else {
                panic!("refused: {request}")
            };
            let text = String::from_utf8(response).unwrap().to_ascii_lowercase();
            assert_eq!(text.contains("permessage-deflate"), agreed, "{text}");
            assert_eq!(deflate.is_some(), agreed);
        }
    }

    #[test]
    fn waits_for_the_end_of_the_headers() {
        assert!(matches!(
            respond(GOOD.as_bytes(), true),
            Handshake::Incomplete
        ));
    }

    #[test]
    fn wrong_version_is_426_with_the_supported_one() {
        let request = GOOD.replace("Version: 13", "Version: 8") + "\r\n";
        let h = respond(request.as_bytes(), true);
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
            let h = respond(format!("{request}\r\n").as_bytes(), true);
            assert_eq!(status(&h), 400, "{request}");
        }
    }

    #[test]
    fn oversized_requests_are_refused() {
        let request = format!("{GOOD}X-Filler: {}\r\n", "a".repeat(MAX_REQUEST_LEN));
        assert_eq!(status(&respond(request.as_bytes(), true)), 431);
    }
}
