//! Negotiating permessage-deflate (RFC 7692 §5, §7.1) from the client's `Sec-WebSocket-Extensions`.
//!
//! Owns the header's grammar (RFC 6455 §9.1: comma-separated extensions, `;`-separated parameters, values as
//! tokens or quoted strings, over one or several header lines) and the choice of the one offer to accept. An
//! offer is declined, and the next one tried, when a parameter is unknown, repeated, or has a value it must
//! not have or lacks one it needs; an element that does not parse is skipped. So a client always gets either
//! exactly one accepted set of parameters or no extension at all, never a failed upgrade.
//!
//! What is accepted is decided by what keeps an idle session free of compression state: the answer always
//! carries `server_no_context_takeover` and `client_no_context_takeover` (RFC 7692 §7.1.1.1 and §7.1.1.2
//! allow a server to add both unasked). Every message then stands alone in both directions, so one deflater
//! and one inflater per shard serve all its sessions, and a room broadcast is compressed once.
//!
//! It must not compress anything (that is [`super::deflate`]) nor read sockets.

/// The parameters of an accepted permessage-deflate offer: all a session needs to remember about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PerMessageDeflate {
    /// The largest LZ77 window our compressed messages may use (`server_max_window_bits`, 8-15; 15 when
    /// the client set no limit).
    server_window_bits: u8,
    /// Whether the client asked for `server_max_window_bits`, so the answer must carry the value.
    window_bits_requested: bool,
}

/// The largest window, the one our compressed messages use and our inflater reads.
pub(crate) const MAX_WINDOW_BITS: u8 = 15;

impl PerMessageDeflate {
    /// Whether our compressed messages may go to this client: they use the full 15-bit window, so not
    /// when it limited our window with `server_max_window_bits`. Such a client, which asked to spend less
    /// memory inflating, gets every message plain (always allowed, RFC 7692 §6) and none at all; keeping
    /// a compression stream per window size instead would cost each shard up to 300 KB per size.
    pub(crate) fn takes_our_compression(self) -> bool {
        self.server_window_bits == MAX_WINDOW_BITS
    }

    /// The value of our `Sec-WebSocket-Extensions` answer.
    pub(crate) fn response(self) -> String {
        let mut answer =
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover".to_owned();
        if self.window_bits_requested {
            answer.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_window_bits
            ));
        }
        answer
    }
}

/// The first acceptable permessage-deflate offer among every `Sec-WebSocket-Extensions` line, in order.
pub(crate) fn negotiate<'a>(
    lines: impl IntoIterator<Item = &'a [u8]>,
) -> Option<PerMessageDeflate> {
    lines
        .into_iter()
        .filter_map(|line| std::str::from_utf8(line).ok())
        .flat_map(|line| split_outside_quotes(line, ','))
        .filter_map(parse_extension)
        .filter(|(name, _)| name.eq_ignore_ascii_case("permessage-deflate"))
        .find_map(|(_, params)| accept(&params))
}

/// One parameter as offered: its name and its value, unquoted, if it has one.
type Param = (String, Option<String>);

/// Whether we accept an offer with these parameters, and with what.
fn accept(params: &[Param]) -> Option<PerMessageDeflate> {
    let mut seen: Vec<&str> = Vec::new();
    let mut deflate = PerMessageDeflate {
        server_window_bits: MAX_WINDOW_BITS,
        window_bits_requested: false,
    };
    for (name, value) in params {
        if seen.contains(&name.as_str()) {
            return None; // RFC 7692 §7: a repeated parameter makes the offer invalid.
        }
        seen.push(name);
        match (name.as_str(), value.as_deref()) {
            // We answer both anyway; offered, they must come without a value.
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("server_max_window_bits", Some(value)) => {
                deflate.server_window_bits = window_bits(value)?;
                deflate.window_bits_requested = true;
            }
            // Whatever window the client compresses with, our inflater's 15 bits read it, so the value
            // only has to be valid and the answer need not mention it.
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(value)) => {
                window_bits(value)?;
            }
            _ => return None,
        }
    }
    Some(deflate)
}

/// A window size as RFC 7692 §7.1.2 writes it: decimal digits without a leading zero, 8 to 15.
fn window_bits(value: &str) -> Option<u8> {
    let digits = value.len() <= 2 && value.bytes().all(|b| b.is_ascii_digit());
    if !digits || value.is_empty() || value.starts_with('0') {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (8..=MAX_WINDOW_BITS).contains(&bits).then_some(bits)
}

/// An extension element (`name; param; param=value`), or `None` when it does not follow the grammar.
fn parse_extension(element: &str) -> Option<(&str, Vec<Param>)> {
    let mut parts = split_outside_quotes(element, ';');
    let name = parts.next()?.trim();
    if !is_token(name) {
        return None;
    }
    let params = parts.map(parse_param).collect::<Option<Vec<_>>>()?;
    Some((name, params))
}

/// `name` or `name=value`, the value a token or a quoted string holding one (RFC 7692 §7: the quoted form
/// must also be a valid token once unquoted).
fn parse_param(param: &str) -> Option<Param> {
    let (name, value) = match param.split_once('=') {
        None => (param.trim(), None),
        Some((name, value)) => (name.trim(), Some(value.trim())),
    };
    // Names compare without regard to case, as the extension's own name does.
    let name = name.to_ascii_lowercase();
    if !is_token(&name) {
        return None;
    }
    let value = match value {
        None => None,
        Some(value) => {
            let unquoted = match value.strip_prefix('"') {
                Some(rest) => unquote(rest)?,
                None => value.to_owned(),
            };
            if !is_token(&unquoted) {
                return None;
            }
            Some(unquoted)
        }
    };
    Some((name, value))
}

/// The content of a quoted string whose opening quote was already taken: escapes resolved, nothing after
/// the closing quote.
fn unquote(rest: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return chars.as_str().is_empty().then_some(out),
            c => out.push(c),
        }
    }
    None // No closing quote.
}

/// RFC 7230 §3.2.6 `token`: one or more visible ASCII characters other than separators.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Splits `s` at every `separator` that is not inside a quoted string.
fn split_outside_quotes(s: &str, separator: char) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        let mut quoted = false;
        let mut escaped = false;
        for (i, c) in s.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                c if c == separator && !quoted => {
                    rest = Some(&s[i + c.len_utf8()..]);
                    return Some(&s[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(lines: &[&str]) -> Option<String> {
        negotiate(lines.iter().map(|l| l.as_bytes())).map(PerMessageDeflate::response)
    }

    const PLAIN: &str =
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn accepts_what_browsers_and_libraries_offer() {
        for offer in [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=15",
            "permessage-deflate; client_max_window_bits=\"10\"",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate;client_no_context_takeover ; client_max_window_bits = 8",
            "PerMessage-Deflate",
            "permessage-deflate; Client_Max_Window_Bits",
            "x-webkit-deflate-frame, permessage-deflate",
        ] {
            assert_eq!(answer(&[offer]).as_deref(), Some(PLAIN), "{offer}");
        }
    }

    #[test]
    fn echoes_a_server_window_limit_and_then_sends_that_client_nothing_compressed() {
        for bits in 8..=15 {
            let offer = format!(
                "permessage-deflate; server_max_window_bits={bits}; client_max_window_bits"
            );
            let got = answer(&[&offer]);
            assert_eq!(got, Some(format!("{PLAIN}; server_max_window_bits={bits}")));
            let accepted = negotiate([offer.as_bytes()]).unwrap();
            assert_eq!(accepted.takes_our_compression(), bits == MAX_WINDOW_BITS);
        }
        let got = answer(&["permessage-deflate; server_max_window_bits=\"12\""]);
        assert_eq!(got, Some(format!("{PLAIN}; server_max_window_bits=12")));
        assert!(negotiate([&b"permessage-deflate"[..]])
            .unwrap()
            .takes_our_compression());
    }

    #[test]
    fn declines_invalid_offers() {
        for offer in [
            "permessage-deflate; unknown_param",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=\"\"",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=09",
            "permessage-deflate; client_max_window_bits=08",
            "permessage-deflate; server_max_window_bits=+9",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; client_max_window_bits=\"10",
            "permessage-deflate; client_max_window_bits=\"1 0\"",
            "permessage-deflate; =10",
            "permessage deflate",
            "x-webkit-deflate-frame",
            "",
        ] {
            assert_eq!(answer(&[offer]), None, "{offer}");
        }
    }

    #[test]
    fn takes_the_first_acceptable_offer_across_elements_and_lines() {
        let got = answer(&[
            "permessage-deflate; server_max_window_bits=7, permessage-deflate; server_max_window_bits=11",
            "permessage-deflate",
        ]);
        assert_eq!(got, Some(format!("{PLAIN}; server_max_window_bits=11")));
        let got = answer(&[
            "permessage-deflate; bogus",
            "permessage-deflate; client_max_window_bits",
        ]);
        assert_eq!(got.as_deref(), Some(PLAIN));
        // A comma inside a quoted value does not split the element (which is then declined).
        let got = answer(&["permessage-deflate; client_max_window_bits=\"9,permessage-deflate\""]);
        assert_eq!(got, None);
    }

    proptest::proptest! {
        #[test]
        fn any_header_gets_one_answer_or_none(line in "[ -~]{0,120}") {
            if let Some(deflate) = negotiate([line.as_bytes()]) {
                proptest::prop_assert!((8..=MAX_WINDOW_BITS).contains(&deflate.server_window_bits));
                proptest::prop_assert!(deflate.response().starts_with(PLAIN));
            }
        }
    }
}
