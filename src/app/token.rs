//! The chat app's tokens: HS256 JWTs signed with `AUTH_SECRET`, carrying the user (`sub`), an expiry
//! (`exp`) and the rooms the user may join (`rooms`, names with `*` matching any run of characters).
//!
//! [`Tokens::issue`] makes one (the `roomcast token` subcommand prints it); [`Tokens::verify`] checks one
//! (the authentication hook, for `?token=` on the upgrade); [`may_join`] applies its room patterns (the room
//! authorization hook). Signing and checking are jsonwebtoken's; only HS256 is accepted, so a token cannot
//! pick a weaker algorithm, and `exp` is required.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use roomcast::Identity;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// When it stops being valid, in seconds since the Unix epoch.
    pub exp: u64,
    /// Room name patterns the user may join (`general`, `team-*`, `*`).
    pub rooms: Vec<String>,
}

/// Signs and checks tokens with one secret.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Tokens {
    pub fn new(secret: &str) -> Tokens {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // An expired token is refused at once: no grace period on top of its own expiry.
        validation.leeway = 0;
        Tokens {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// A token for `user`, valid for `ttl`, allowing the room patterns `rooms`.
    pub fn issue(&self, user: &str, rooms: &[String], ttl: Duration) -> String {
        let claims = Claims {
            sub: user.to_owned(),
            exp: unix_now().saturating_add(ttl.as_secs()),
            rooms: rooms.to_vec(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of serializable claims cannot fail")
    }

    /// The identity a valid token establishes, or why it is not valid (for the 401's body).
    pub fn verify(&self, token: &str) -> Result<Identity, String> {
        let data =
            decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => "token expired".to_owned(),
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                        "token signature does not match".to_owned()
                    }
                    _ => format!("invalid token: {e}"),
                }
            })?;
        let mut claims = Map::new();
        let rooms = data.claims.rooms.into_iter().map(Value::String).collect();
        claims.insert("rooms".to_owned(), Value::Array(rooms));
        claims.insert("exp".to_owned(), Value::from(data.claims.exp));
        Ok(Identity {
            user: data.claims.sub,
            claims,
        })
    }
}

/// Whether `identity`'s token lets it join `room`. Without an identity (authentication off) every room is
/// open, as in the seed.
pub fn may_join(identity: Option<&Identity>, room: &str) -> bool {
    let Some(identity) = identity else {
        return true;
    };
    identity
        .claims
        .get("rooms")
        .and_then(Value::as_array)
        .is_some_and(|patterns| {
            patterns
                .iter()
                .filter_map(Value::as_str)
                .any(|pattern| matches_pattern(pattern, room))
        })
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters (including none) and every
/// other character only itself.
pub fn matches_pattern(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // No `*`: the whole name had to be the pattern.
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn patterns_match_with_stars_only() {
        for (pattern, name) in [
            ("general", "general"),
            ("team-*", "team-"),
            ("team-*", "team-red"),
            ("*", "anything"),
            ("*-ops", "night-ops"),
            ("a*b*c", "aXbYc"),
            ("a*b*c", "abc"),
            ("a*a", "aa"),
        ] {
            assert!(matches_pattern(pattern, name), "{pattern} {name}");
        }
        for (pattern, name) in [
            ("general", "generalx"),
            ("general", "genera"),
            ("team-*", "teams"),
            ("*-ops", "ops"),
            ("a*b*c", "acb"),
            ("a*a", "a"),
            ("", "x"),
        ] {
            assert!(!matches_pattern(pattern, name), "{pattern} {name}");
        }
    }

    #[test]
    fn a_token_round_trips_and_its_rooms_decide_joins() {
        let tokens = Tokens::new(SECRET);
        let rooms = vec!["general".to_owned(), "team-*".to_owned()];
        let token = tokens.issue("alice", &rooms, Duration::from_secs(60));
        let identity = tokens.verify(&token).unwrap();
        assert_eq!(identity.user, "alice");
        assert!(may_join(Some(&identity), "general"));
        assert!(may_join(Some(&identity), "team-blue"));
        assert!(!may_join(Some(&identity), "secret"));
        assert!(
            may_join(None, "secret"),
            "no authentication: every room is open"
        );
    }

    #[test]
    fn tampered_foreign_expired_and_unsigned_tokens_are_refused() {
        let tokens = Tokens::new(SECRET);
        let token = tokens.issue("alice", &["*".to_owned()], Duration::from_secs(60));
        let other = Tokens::new("another-secret-another-secret-xx");
        assert!(other.verify(&token).unwrap_err().contains("signature"));
        let mut tampered = token.clone();
        tampered.insert(tampered.len() - 2, 'A');
        assert!(tokens.verify(&tampered).is_err());
        let late = Claims {
            sub: "alice".into(),
            exp: unix_now() - 10,
            rooms: vec![],
        };
        let late = encode(&Header::new(Algorithm::HS256), &late, &tokens.encoding).unwrap();
        assert_eq!(tokens.verify(&late).unwrap_err(), "token expired");
        // alg "none" is not HS256.
        let none = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            token.split('.').nth(1).unwrap()
        );
        assert!(tokens.verify(&none).is_err());
        assert!(tokens.verify("garbage").is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_strings_never_verify(token in ".{0,200}") {
            proptest::prop_assert!(Tokens::new(SECRET).verify(&token).is_err());
        }

        #[test]
        fn any_token_round_trips_and_any_changed_character_breaks_it(
            user in ".{1,30}",
            rooms in proptest::collection::vec("[a-z*-]{1,12}", 0..4),
            at in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let tokens = Tokens::new(SECRET);
            let token = tokens.issue(&user, &rooms, Duration::from_secs(60));
            let identity = tokens.verify(&token).unwrap();
            proptest::prop_assert_eq!(&identity.user, &user);
            // Any one character changed, except the signature's last (whose unused low bits base64 may
            // ignore), and the token no longer holds.
            let at = at.index(token.len() - 1);
            let original = token.as_bytes()[at];
            let swapped = if original == b'A' { 'B' } else { 'A' };
            let mut tampered = token.clone();
            tampered.replace_range(at..at + 1, &swapped.to_string());
            proptest::prop_assert!(tokens.verify(&tampered).is_err(), "{} still verifies", tampered);
        }

        #[test]
        fn a_pattern_without_a_star_matches_only_itself_and_a_star_suffix_matches_its_prefix(
            name in "[a-z0-9-]{0,12}",
            other in "[a-z0-9-]{0,12}",
        ) {
            proptest::prop_assert!(matches_pattern(&name, &name));
            proptest::prop_assert_eq!(matches_pattern(&name, &other), name == other);
            proptest::prop_assert!(matches_pattern("*", &other));
            let prefixed = format!("{name}*");
            let joined = format!("{name}{other}");
            proptest::prop_assert!(matches_pattern(&prefixed, &joined));
        }
    }
}
