//! The ICE servers a page should use, served at `GET /config`: STUN URLs as given, and TURN URLs with
//! time-limited credentials in the form of the TURN REST API that coturn's `use-auth-secret` accepts —
//! username `<expiry unix time>:<id>`, password base64(HMAC-SHA1(secret, username)) — so no long-lived TURN
//! password ships in a page, and one handed out stops working at its expiry.

use base64::Engine;
use hmac::{Hmac, Mac};
use std::time::Duration;

/// What the server tells pages about ICE.
#[derive(Debug, Clone, Default)]
pub struct IceConfig {
    /// `stun:`, `turn:` or `turns:` URLs.
    pub servers: Vec<String>,
    /// The secret shared with the TURN server (`static-auth-secret` in coturn); without it TURN URLs are
    /// handed out without credentials.
    pub turn_secret: Option<String>,
    /// How long handed-out TURN credentials last.
    pub credential_ttl: Duration,
}

/// The TURN REST API password for `username`: base64 of HMAC-SHA1 keyed with the shared secret.
pub fn turn_password(secret: &str, username: &str) -> String {
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

impl IceConfig {
    /// The `/config` document at `now_unix` (seconds) for a client named `id` (any short token: it only
    /// tells credentials apart in the TURN server's logs): `{"iceServers":[{"urls":…,"username":…,
    /// "credential":…}]}`, the shape `RTCPeerConnection` takes.
    pub fn document(&self, now_unix: u64, id: &str) -> String {
        let expiry = now_unix.saturating_add(self.credential_ttl.as_secs());
        let servers: Vec<serde_json::Value> = self
            .servers
            .iter()
            .map(|url| {
                let turn = url.starts_with("turn:") || url.starts_with("turns:");
                match (&self.turn_secret, turn) {
                    (Some(secret), true) => {
                        let username = format!("{expiry}:{id}");
                        let credential = turn_password(secret, &username);
                        serde_json::json!({ "urls": url, "username": username, "credential": credential })
                    }
                    _ => serde_json::json!({ "urls": url }),
                }
            })
            .collect();
        serde_json::json!({ "iceServers": servers }).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_rest_credentials_match_the_shared_secret_and_expire() {
        // RFC 2202's first HMAC-SHA1 vector through the same function: key 0x0b × 20, "Hi There".
        let key = String::from_utf8(vec![0x0b; 20]).unwrap();
        let expected = base64::engine::general_purpose::STANDARD.encode([
            0xb6, 0x17, 0x31, 0x86, 0x55, 0x05, 0x72, 0x64, 0xe2, 0x8b, 0xc0, 0xb6, 0xfb, 0x37, 0x8c, 0x8e, 0xf1, 0x46,
            0xbe, 0x00,
        ]);
        assert_eq!(turn_password(&key, "Hi There"), expected);

        let ice = IceConfig {
            servers: vec!["stun:192.0.2.1:3478".into(), "turn:192.0.2.1:3478?transport=udp".into()],
            turn_secret: Some("s3cret".into()),
            credential_ttl: Duration::from_secs(3600),
        };
        let doc: serde_json::Value = serde_json::from_str(&ice.document(1_000_000, "ab12")).unwrap();
        let servers = doc["iceServers"].as_array().unwrap();
        assert_eq!(servers[0], serde_json::json!({ "urls": "stun:192.0.2.1:3478" }), "STUN has no credentials");
        assert_eq!(servers[1]["username"], "1003600:ab12");
        assert_eq!(servers[1]["credential"], turn_password("s3cret", "1003600:ab12"));
        assert_ne!(servers[1]["credential"], turn_password("other", "1003600:ab12"));
        // Without a secret, TURN URLs go out bare.
        let bare = IceConfig { turn_secret: None, ..ice };
        assert!(!bare.document(1, "x").contains("credential"));
    }
}
