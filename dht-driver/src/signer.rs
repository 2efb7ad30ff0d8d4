//! Who signs a node's records: an ed25519 key held in memory, or one the platform keeps and never hands
//! out (WebCrypto's non-extractable keys in a browser), which signs asynchronously.

use dht_core::{OwnerKey, SigningKey};
use futures::future::LocalBoxFuture;
use std::rc::Rc;

/// A signing key kept outside the program's memory.
pub trait ExternalSigner {
    /// The public key, as peers name the owner.
    fn owner(&self) -> OwnerKey;
    /// An ed25519 signature of `message`, or why the platform refused to make one.
    fn sign(&self, message: Vec<u8>) -> LocalBoxFuture<'static, Result<[u8; 64], String>>;
}

/// The key a node signs its records with.
#[derive(Clone)]
pub enum Signer {
    /// A key in memory: it can be exported to carry the identity to another device.
    Key(Box<SigningKey>),
    /// A key the platform keeps: it signs, and cannot be exported.
    External(Rc<dyn ExternalSigner>),
}

impl Signer {
    /// The public key, as peers name the owner.
    pub fn owner(&self) -> OwnerKey {
        match self {
            Signer::Key(key) => OwnerKey::of(key),
            Signer::External(ext) => ext.owner(),
        }
    }

    /// The 32 secret bytes, when the key is in memory.
    pub fn secret_bytes(&self) -> Option<[u8; 32]> {
        match self {
            Signer::Key(key) => Some(key.to_bytes()),
            Signer::External(_) => None,
        }
    }

    /// An ed25519 signature of `message`.
    pub async fn sign(&self, message: Vec<u8>) -> Result<[u8; 64], String> {
        match self {
            Signer::Key(key) => Ok(ed25519_dalek::Signer::sign(&**key, &message).to_bytes()),
            Signer::External(ext) => ext.sign(message).await,
        }
    }
}

impl From<SigningKey> for Signer {
    fn from(key: SigningKey) -> Self {
        Signer::Key(Box::new(key))
    }
}

impl core::fmt::Debug for Signer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let kind = match self {
            Signer::Key(_) => "Key",
            Signer::External(_) => "External",
        };
        write!(f, "Signer::{kind}({})", self.owner())
    }
}
