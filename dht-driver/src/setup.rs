//! What every node front end (the native `dht-node`, the browser's `web-node`) does before [`start`]: take
//! its identity from its store (made and kept there on first start) and a seed for the core's randomness
//! from the operating system.
//!
//! [`start`]: crate::start

use dht_core::SigningKey;
use dht_link::{Identity, LinkError};
use kvstore::{Store, StoreError};

/// The metadata entry that holds a node's private key.
pub const IDENTITY_META: &str = "identity";

/// The metadata entry that holds the ed25519 key a node signs its records with.
pub const SIGNING_KEY_META: &str = "signing_key";

/// Why a node could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The store failed to read or keep the key.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// The stored key is not a key (wrong length).
    #[error("stored key unusable: {0}")]
    StoredKey(#[source] LinkError),
    /// No key could be made.
    #[error("key generation: {0}")]
    KeyGeneration(#[source] LinkError),
    /// The operating system's random generator failed.
    #[error("randomness: {0}")]
    Randomness(getrandom::Error),
    /// The stored signing key is not 32 bytes.
    #[error("stored signing key unusable: {0} bytes, not 32")]
    StoredSigningKey(usize),
}

/// The node's identity kept in `store`; on first start a fresh one, stored (durably) before it is returned,
/// so a restart keeps the node id.
pub async fn load_identity<S: Store>(store: &S) -> Result<Identity, SetupError> {
    if let Some(private) = store.get_meta(IDENTITY_META).await? {
        return Identity::from_private(&private).map_err(SetupError::StoredKey);
    }
    let identity = Identity::generate().map_err(SetupError::KeyGeneration)?;
    store.put_meta(IDENTITY_META, identity.private_bytes()).await?;
    Ok(identity)
}

/// The key the node signs its records with, kept in `store` beside its identity: on first start a fresh
/// one, stored (durably) before it is returned, so the node's records stay its own across restarts.
pub async fn load_signing_key<S: Store>(store: &S) -> Result<SigningKey, SetupError> {
    if let Some(key) = stored_signing_key(store).await? {
        return Ok(key);
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(SetupError::Randomness)?;
    let key = SigningKey::from_bytes(&secret);
    store.put_meta(SIGNING_KEY_META, &secret).await?;
    Ok(key)
}

/// The signing key kept in `store`, if one was made ([`load_signing_key`]); nothing is made here.
pub async fn stored_signing_key<S: Store>(store: &S) -> Result<Option<SigningKey>, SetupError> {
    let Some(secret) = store.get_meta(SIGNING_KEY_META).await? else { return Ok(None) };
    let bytes: [u8; 32] = secret.as_slice().try_into().map_err(|_| SetupError::StoredSigningKey(secret.len()))?;
    Ok(Some(SigningKey::from_bytes(&bytes)))
}

/// A seed for [`dht_core::Node`]'s randomness (request ids, lookup choices) from the operating system's
/// generator (web crypto in the browser): unknown to peers, unlike anything derived from the public key.
pub fn random_seed() -> Result<u64, SetupError> {
    getrandom::u64().map_err(SetupError::Randomness)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use kvstore::MemoryStore;

    #[test]
    fn the_identity_is_made_once_and_kept() {
        let store = MemoryStore::new();
        let first = block_on(load_identity(&store)).unwrap();
        let again = block_on(load_identity(&store)).unwrap();
        assert_eq!(first.node_id(), again.node_id());
        let other = block_on(load_identity(&MemoryStore::new())).unwrap();
        assert_ne!(first.node_id(), other.node_id());
    }

    #[test]
    fn a_stored_key_of_the_wrong_length_is_refused() {
        let store = MemoryStore::new();
        block_on(store.put_meta(IDENTITY_META, &[1; 31])).unwrap();
        assert!(matches!(block_on(load_identity(&store)), Err(SetupError::StoredKey(_))));
    }

    #[test]
    fn the_signing_key_is_made_once_and_kept() {
        let store = MemoryStore::new();
        let first = block_on(load_signing_key(&store)).unwrap();
        let again = block_on(load_signing_key(&store)).unwrap();
        assert_eq!(first.verifying_key(), again.verifying_key());
        assert_ne!(first.verifying_key(), block_on(load_signing_key(&MemoryStore::new())).unwrap().verifying_key());
        block_on(store.put_meta(SIGNING_KEY_META, &[1; 33])).unwrap();
        assert!(matches!(block_on(load_signing_key(&store)), Err(SetupError::StoredSigningKey(33))));
    }

    #[test]
    fn seeds_differ() {
        let seeds: std::collections::HashSet<u64> = (0..8).map(|_| random_seed().unwrap()).collect();
        assert_eq!(seeds.len(), 8);
    }
}
