//! A signing key WebCrypto keeps: an ed25519 key pair made non-extractable, so the page's code (and
//! anything injected into it) can have records signed but can never read the secret. The pair is kept in
//! IndexedDB as the `CryptoKey` objects themselves, which the browser stores without exposing the secret.
//! Where the browser has no ed25519 in WebCrypto, the caller falls back to a key in memory.

use dht_core::OwnerKey;
use dht_driver::ExternalSigner;
use futures::future::LocalBoxFuture;
use js_sys::{Array, ArrayBuffer, Reflect, Uint8Array};
use kvstore::IdbStore;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{CryptoKey, CryptoKeyPair, SubtleCrypto};

/// The metadata entry holding the key pair.
const KEY_PAIR_META: &str = "signing_key_webcrypto";
const ALGORITHM: &str = "Ed25519";

/// A WebCrypto ed25519 key pair whose private half cannot be exported.
pub(crate) struct WebCryptoKey {
    private: CryptoKey,
    owner: OwnerKey,
}

fn text(e: JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

/// The global scope's `crypto.subtle` (a window or a worker), if there is one.
fn subtle() -> Option<SubtleCrypto> {
    let crypto = Reflect::get(&js_sys::global(), &JsValue::from_str("crypto")).ok()?;
    let subtle = Reflect::get(&crypto, &JsValue::from_str("subtle")).ok()?;
    subtle.dyn_into::<SubtleCrypto>().ok()
}

impl WebCryptoKey {
    /// The key pair kept in `store`, or else a new non-extractable one, kept there first. `Ok(None)`: the
    /// browser has no ed25519 in WebCrypto (or no WebCrypto: an insecure context).
    pub(crate) async fn load_or_make(store: &IdbStore) -> Result<Option<Self>, String> {
        let Some(subtle) = subtle() else { return Ok(None) };
        if let Some(pair) = store.get_meta_value(KEY_PAIR_META).await.map_err(|e| e.to_string())? {
            return Self::from_pair(&subtle, pair.unchecked_into()).await.map(Some);
        }
        let usages = Array::of2(&JsValue::from_str("sign"), &JsValue::from_str("verify"));
        let made = match subtle.generate_key_with_str(ALGORITHM, false, &usages) {
            Ok(promise) => JsFuture::from(promise).await,
            Err(e) => Err(e),
        };
        let pair: CryptoKeyPair = match made {
            Ok(pair) => pair.unchecked_into(),
            // NotSupportedError: this browser's WebCrypto has no ed25519.
            Err(_) => return Ok(None),
        };
        let key = Self::from_pair(&subtle, pair.clone()).await?;
        store.put_meta_value(KEY_PAIR_META, &pair).await.map_err(|e| format!("keeping the key pair: {e}"))?;
        Ok(Some(key))
    }

    async fn from_pair(subtle: &SubtleCrypto, pair: CryptoKeyPair) -> Result<Self, String> {
        let public = JsFuture::from(subtle.export_key("raw", &pair.get_public_key()).map_err(text)?)
            .await
            .map_err(|e| format!("the public key: {}", text(e)))?;
        let raw = Uint8Array::new(&public.unchecked_into::<ArrayBuffer>()).to_vec();
        let owner = OwnerKey(raw.try_into().map_err(|r: Vec<u8>| format!("a public key of {} bytes", r.len()))?);
        Ok(WebCryptoKey { private: pair.get_private_key(), owner })
    }
}

impl ExternalSigner for WebCryptoKey {
    fn owner(&self) -> OwnerKey {
        self.owner
    }

    fn sign(&self, message: Vec<u8>) -> LocalBoxFuture<'static, Result<[u8; 64], String>> {
        let private = self.private.clone();
        Box::pin(async move {
            let subtle = subtle().ok_or("no WebCrypto here")?;
            let promise = subtle.sign_with_str_and_u8_array(ALGORITHM, &private, &message).map_err(text)?;
            let signature = JsFuture::from(promise).await.map_err(text)?;
            let bytes = Uint8Array::new(&signature.unchecked_into::<ArrayBuffer>()).to_vec();
            bytes.try_into().map_err(|b: Vec<u8>| format!("a signature of {} bytes", b.len()))
        })
    }
}
