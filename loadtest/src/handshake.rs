//! The client side of the HTTP/1.1 upgrade: the request bytes and the check of the server's answer.
//!
//! Owns what a correct `101 Switching Protocols` looks like to the harness (status,
//! `Sec-WebSocket-Accept`, and `Sec-WebSocket-Extensions`). By default no extension is offered, so
//! compression is never negotiated whatever the server's configuration; with `--deflate` the request
//! offers permessage-deflate (RFC 7692) and the answer must accept it, so a run meant to measure
//! compressed fan-out never silently measures plain frames. Key generation and the accept digest come
//! from tungstenite; everything else is a few lines of text, which keeps set-up cost per connection
//! negligible. It does not own the socket (see `client`) nor inflating (see `inflate`).

use std::fmt;

use crate::target::Target;

/// The largest upgrade response accepted; a server sending more is broken, not slow.
pub const MAX_RESPONSE: usize = 8 * 1024;
/// The extension offer of a `--deflate` run. `client_max_window_bits` without a value lets the server
/// name any window for our compressor: the harness sends uncompressed frames (RFC 7692 allows RSV1 clear
/// on any message), so nothing the server asks of the client binds it.
pub const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// Why an upgrade failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// The status line was not `HTTP/1.1 101`.
    Status(String),
    /// `Sec-WebSocket-Accept` was missing or did not match the key.
    Accept,
    /// The response headers did not end within [`MAX_RESPONSE`] bytes.
    TooLong,
    /// permessage-deflate was offered and the server answered without it.
    DeflateRefused,
    /// `Sec-WebSocket-Extensions` named something not offered, or parameters RFC 7692 does not allow.
    Extension(String),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Status(line) => write!(f, "upgrade refused: `{line}`"),
            HandshakeError::Accept => write!(f, "wrong or missing Sec-WebSocket-Accept"),
            HandshakeError::TooLong => {
                write!(f, "upgrade response longer than {MAX_RESPONSE} bytes")
            }
            HandshakeError::DeflateRefused => write!(
                f,
                "permessage-deflate offered, the server answered without it \
                 (WEBSOCKET_ENABLE_DEFLATE=false?)"
            ),
            HandshakeError::Extension(why) => write!(f, "bad Sec-WebSocket-Extensions: {why}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// What the server's answer agreed to for permessage-deflate: the parameters that bind the server's
/// compressor, which the harness inflates. Those binding the client's compressor are checked, then
/// dropped: the harness never compresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deflate {
    /// Every message starts with an empty window: one decompressor, reset per message, serves every
    /// session of a thread.
    pub server_no_context_takeover: bool,
    /// The server's window (8 to 15 bits), when it named one: the most a session's own decompressor needs.
    pub server_max_window_bits: Option<u8>,
}

/// A `101` that passed every check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// Bytes the response headers used (frames may follow in the same read).
    pub used: usize,
    /// permessage-deflate, when it was offered (it must then be accepted).
    pub deflate: Option<Deflate>,
}

/// One pending upgrade: the request to send and what the response must carry.
#[derive(Clone, Debug)]
pub struct Upgrade {
    /// The full request, ready to write.
    pub request: Vec<u8>,
    expected_accept: String,
    offers_deflate: bool,
}

impl Upgrade {
    /// A fresh key and its request for `target`, offering permessage-deflate when `deflate`.
    pub fn new(target: &Target, deflate: bool) -> Upgrade {
        let key = tungstenite::handshake::client::generate_key();
        let extensions = if deflate {
            format!("Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n")
        } else {
            String::new()
        };
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extensions}\r\n",
            target.path, target.host_header
        )
        .into_bytes();
        let expected_accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        Upgrade {
            request,
            expected_accept,
            offers_deflate: deflate,
        }
    }

    /// Checks the response at the start of `buf`: `Ok(None)` until its headers are complete.
    pub fn check(&self, buf: &[u8]) -> Result<Option<Accepted>, HandshakeError> {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return if buf.len() > MAX_RESPONSE {
                Err(HandshakeError::TooLong)
            } else {
                Ok(None)
            };
        };
        let head = String::from_utf8_lossy(&buf[..end]);
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or("");
        if !status.starts_with("HTTP/1.1 101") {
            return Err(HandshakeError::Status(status.to_owned()));
        }
        let mut accepted = false;
        let mut extensions = Vec::new();
        for (name, value) in lines.filter_map(|l| l.split_once(':')) {
            let name = name.trim();
            if name.eq_ignore_ascii_case("sec-websocket-accept") {
                accepted |= value.trim() == self.expected_accept;
            } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
                extensions.push(value);
            }
        }
        if !accepted {
            return Err(HandshakeError::Accept);
        }
        let deflate = negotiated(&extensions, self.offers_deflate)?;
        Ok(Some(Accepted {
            used: end + 4,
            deflate,
        }))
    }
}

/// The permessage-deflate the `Sec-WebSocket-Extensions` values (every such header line, in order)
/// accept. The server may only accept what was offered (RFC 6455 4.1): anything else fails the upgrade,
/// as does an offer it left unanswered.
fn negotiated(values: &[&str], offered: bool) -> Result<Option<Deflate>, HandshakeError> {
    let mut deflate = None;
    let elements = values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty());
    for element in elements {
        let mut parts = element.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        if !name.eq_ignore_ascii_case("permessage-deflate") {
            return Err(HandshakeError::Extension(format!(
                "`{name}` was not offered"
            )));
        }
        if !offered {
            return Err(HandshakeError::Extension(
                "permessage-deflate was not offered".to_owned(),
            ));
        }
        if deflate.is_some() {
            return Err(HandshakeError::Extension(
                "permessage-deflate accepted twice".to_owned(),
            ));
        }
        deflate = Some(deflate_parameters(parts)?);
    }
    if offered && deflate.is_none() {
        return Err(HandshakeError::DeflateRefused);
    }
    Ok(deflate)
}

/// The parameters of one accepted permessage-deflate (RFC 7692 7.1): each at most once, window sizes
/// 8 to 15, nothing unknown.
fn deflate_parameters<'a>(
    parameters: impl Iterator<Item = &'a str>,
) -> Result<Deflate, HandshakeError> {
    let mut deflate = Deflate::default();
    let mut seen = Vec::new();
    for parameter in parameters {
        let (name, value) = match parameter.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (parameter, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return Err(HandshakeError::Extension(format!("`{name}` given twice")));
        }
        let bad = || HandshakeError::Extension(format!("`{parameter}`"));
        let bits = |value: Option<&str>| -> Result<u8, HandshakeError> {
            value
                .and_then(|v| v.parse::<u8>().ok())
                .filter(|b| (8..=15).contains(b))
                .ok_or_else(bad)
        };
        match (name.as_str(), value) {
            ("server_no_context_takeover", None) => deflate.server_no_context_takeover = true,
            // Binds the client's compressor, which the harness never uses.
            ("client_no_context_takeover", None) => {}
            ("server_max_window_bits", v) => deflate.server_max_window_bits = Some(bits(v)?),
            // Offered without a value, so the server may answer with or without one.
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", v) => {
                bits(v)?;
            }
            _ => return Err(bad()),
        }
        seen.push(name);
    }
    Ok(deflate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(deflate: bool) -> Upgrade {
        Upgrade::new(&Target::parse("ws://127.0.0.1:9090/").unwrap(), deflate)
    }

    /// A `101` for `up` with these extra header lines.
    fn response(up: &Upgrade, extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n{extra}\r\n",
            up.expected_accept
        )
    }

    fn deflate_answer(extensions: &str) -> Result<Option<Accepted>, HandshakeError> {
        let up = upgrade(true);
        up.check(response(&up, &format!("Sec-WebSocket-Extensions: {extensions}\r\n")).as_bytes())
    }

    #[test]
    fn accepts_a_correct_101_split_anywhere() {
        let up = upgrade(false);
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             sec-websocket-accept: {}\r\n\r\nhi!!",
            up.expected_accept
        );
        let bytes = response.as_bytes();
        let head_len = bytes.len() - 4;
        for cut in 0..head_len {
            assert_eq!(up.check(&bytes[..cut]), Ok(None));
        }
        let accepted = Accepted {
            used: head_len,
            deflate: None,
        };
        assert_eq!(up.check(bytes), Ok(Some(accepted)));
    }

    #[test]
    fn refuses_wrong_status_or_accept() {
        let up = upgrade(false);
        assert!(matches!(
            up.check(b"HTTP/1.1 400 Bad Request\r\n\r\n"),
            Err(HandshakeError::Status(_))
        ));
        assert_eq!(
            up.check(b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: nope\r\n\r\n"),
            Err(HandshakeError::Accept)
        );
        assert_eq!(
            up.check(&[b'x'; MAX_RESPONSE + 1]),
            Err(HandshakeError::TooLong)
        );
    }

    #[test]
    fn request_names_path_host_and_version() {
        let up = upgrade(false);
        let text = String::from_utf8(up.request.clone()).unwrap();
        assert!(text.starts_with("GET / HTTP/1.1\r\nHost: 127.0.0.1:9090\r\n"));
        assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
        assert!(!text.to_ascii_lowercase().contains("extensions"));
    }

    #[test]
    fn without_deflate_the_request_is_the_one_sent_before_deflate_existed() {
        let up = upgrade(false);
        let text = String::from_utf8(up.request.clone()).unwrap();
        let key = text
            .split("\r\n")
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        assert_eq!(
            text,
            format!(
                "GET / HTTP/1.1\r\nHost: 127.0.0.1:9090\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
        );
    }

    #[test]
    fn with_deflate_the_request_offers_it_once_before_the_blank_line() {
        let text = String::from_utf8(upgrade(true).request).unwrap();
        assert!(text.ends_with(
            "Sec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        ));
        assert_eq!(text.matches("Sec-WebSocket-Extensions").count(), 1);
    }

    #[test]
    fn roomcast_answer_is_parsed() {
        let accepted = deflate_answer(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            accepted.deflate,
            Some(Deflate {
                server_no_context_takeover: true,
                server_max_window_bits: None,
            })
        );
    }

    #[test]
    fn every_parameter_is_read_whatever_its_case_spacing_or_quotes() {
        let up = upgrade(true);
        let answer = response(
            &up,
            "sec-websocket-EXTENSIONS:Permessage-Deflate ;Server_Max_Window_Bits=\"10\" ; \
             client_max_window_bits=12;client_no_context_takeover\r\n",
        );
        let deflate = up.check(answer.as_bytes()).unwrap().unwrap().deflate;
        assert_eq!(
            deflate,
            Some(Deflate {
                server_no_context_takeover: false,
                server_max_window_bits: Some(10),
            })
        );
        // client_max_window_bits may come back without a value: it was offered without one.
        let bare =
            deflate_answer("permessage-deflate; client_max_window_bits; server_max_window_bits=8");
        assert_eq!(
            bare.unwrap()
                .unwrap()
                .deflate
                .unwrap()
                .server_max_window_bits,
            Some(8)
        );
    }

    #[test]
    fn an_offer_left_unanswered_is_refused() {
        let up = upgrade(true);
        assert_eq!(
            up.check(response(&up, "").as_bytes()),
            Err(HandshakeError::DeflateRefused)
        );
        assert!(HandshakeError::DeflateRefused
            .to_string()
            .contains("WEBSOCKET_ENABLE_DEFLATE"));
    }

    #[test]
    fn answers_rfc_7692_forbids_are_refused() {
        for bad in [
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=ten",
            "permessage-deflate; client_max_window_bits=99",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
            "permessage-deflate, permessage-deflate",
            "x-webkit-deflate-frame",
        ] {
            assert!(
                matches!(deflate_answer(bad), Err(HandshakeError::Extension(_))),
                "{bad}: {:?}",
                deflate_answer(bad)
            );
        }
    }

    #[test]
    fn an_extension_never_offered_is_refused() {
        let up = upgrade(false);
        let answer = response(&up, "Sec-WebSocket-Extensions: permessage-deflate\r\n");
        assert!(matches!(
            up.check(answer.as_bytes()),
            Err(HandshakeError::Extension(_))
        ));
    }
}
