//! The client side of the HTTP/1.1 upgrade: the request bytes and the check of the server's answer.
//!
//! Owns what a correct `101 Switching Protocols` looks like to the harness (status and
//! `Sec-WebSocket-Accept`). No extension is offered, so compression is never negotiated whatever the
//! server's configuration. Key generation and the accept digest come from tungstenite; everything
//! else is a few lines of text, which keeps set-up cost per connection negligible. It does not own the
//! socket (see `client`).

use std::fmt;

use crate::target::Target;

/// The largest upgrade response accepted; a server sending more is broken, not slow.
pub const MAX_RESPONSE: usize = 8 * 1024;

/// Why an upgrade failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// The status line was not `HTTP/1.1 101`.
    Status(String),
    /// `Sec-WebSocket-Accept` was missing or did not match the key.
    Accept,
    /// The response headers did not end within [`MAX_RESPONSE`] bytes.
    TooLong,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Status(line) => write!(f, "upgrade refused: `{line}`"),
            HandshakeError::Accept => write!(f, "wrong or missing Sec-WebSocket-Accept"),
            HandshakeError::TooLong => {
                write!(f, "upgrade response longer than {MAX_RESPONSE} bytes")
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

/// One pending upgrade: the request to send and the accept value the response must carry.
#[derive(Clone, Debug)]
pub struct Upgrade {
    /// The full request, ready to write.
    pub request: Vec<u8>,
    expected_accept: String,
}

impl Upgrade {
    /// A fresh key and its request for `target`.
    pub fn new(target: &Target) -> Upgrade {
        let key = tungstenite::handshake::client::generate_key();
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            target.path, target.host_header
        )
        .into_bytes();
        let expected_accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        Upgrade {
            request,
            expected_accept,
        }
    }

    /// Checks the response at the start of `buf`: `Ok(None)` until its headers are complete, then the
    /// number of bytes the headers used (frames may follow in the same read).
    pub fn check(&self, buf: &[u8]) -> Result<Option<usize>, HandshakeError> {
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
        let accepted = lines
            .filter_map(|l| l.split_once(':'))
            .any(|(name, value)| {
                name.trim().eq_ignore_ascii_case("sec-websocket-accept")
                    && value.trim() == self.expected_accept
            });
        if !accepted {
            return Err(HandshakeError::Accept);
        }
        Ok(Some(end + 4))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade() -> Upgrade {
        Upgrade::new(&Target::parse("ws://127.0.0.1:9090/").unwrap())
    }

    #[test]
    fn accepts_a_correct_101_split_anywhere() {
        let up = upgrade();
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
        assert_eq!(up.check(bytes), Ok(Some(head_len)));
    }

    #[test]
    fn refuses_wrong_status_or_accept() {
        let up = upgrade();
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
        let up = upgrade();
        let text = String::from_utf8(up.request.clone()).unwrap();
        assert!(text.starts_with("GET / HTTP/1.1\r\nHost: 127.0.0.1:9090\r\n"));
        assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
        assert!(!text.to_ascii_lowercase().contains("extensions"));
    }
}
