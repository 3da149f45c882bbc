//! `[route.decrypt]`: PHP `openssl_decrypt`-compatible decryption of request bodies.

use base64::Engine;
use http::HeaderValue;

use super::reader::Section;
use crate::decrypt::{Cipher, Decryptor, KeyFit, fit_key};

/// `[route.decrypt]`, checked.
#[derive(Debug, Clone)]
pub struct DecryptConfig {
    /// Cipher and key.
    pub decryptor: Decryptor,
    /// Query parameter with the hex IV; absent parameter = all-zero IV.
    pub iv_param: String,
    /// Query parameter with the hex GCM tag.
    pub tag_param: String,
    /// `Content-Type` of the decrypted body sent upstream.
    pub forward_content_type: HeaderValue,
    /// Refuse plaintexts that are not JSON.
    pub require_json: bool,
}

pub(super) fn read_decrypt(s: Section<'_, '_>) -> Option<DecryptConfig> {
    let names = Cipher::ALL.map(Cipher::name).join(", ");
    let cipher = match s.required_string("cipher", &format!("set cipher to one of {names}")) {
        Some(name) => match Cipher::from_name(&name) {
            Some(c) => Some(c),
            None => {
                s.error(
                    "cipher",
                    format!("\"{name}\" is not a supported cipher"),
                    format!("use one of {names}"),
                );
                None
            }
        },
        None => None,
    };
    let encoding = s.string("key_encoding").unwrap_or_else(|| "raw".into());
    let key = s.secret("key");
    if key.is_none() {
        s.error(
            "key",
            "is required but missing",
            "set key = \"${YOUR_KEY_VARIABLE}\" to the secret key the sender encrypts with",
        );
    }
    let material: Option<Vec<u8>> = key.and_then(|k| {
        // The key is a secret: messages describe the problem without echoing it.
        match encoding.as_str() {
            "raw" => Some(k.as_bytes().to_vec()),
            "hex" => match hex::decode(k.expose().trim()) {
                Ok(b) => Some(b),
                Err(_) => {
                    s.error(
                        "key",
                        "is not valid hex (key_encoding = \"hex\")",
                        "write the key as hex digits, or set key_encoding = \"raw\"",
                    );
                    None
                }
            },
            "base64" => match base64::engine::general_purpose::STANDARD.decode(k.expose().trim()) {
                Ok(b) => Some(b),
                Err(_) => {
                    s.error(
                        "key",
                        "is not valid base64 (key_encoding = \"base64\")",
                        "write the key as standard base64, or set key_encoding = \"raw\"",
                    );
                    None
                }
            },
            other => {
                s.error(
                    "key_encoding",
                    format!("\"{other}\" is not a key encoding"),
                    "use \"raw\" (the string's bytes, as PHP uses them), \"hex\" or \"base64\"",
                );
                None
            }
        }
    });
    if let (Some(m), Some(c)) = (&material, cipher) {
        if m.is_empty() {
            s.error(
                "key",
                "is empty",
                "set the secret key the sender encrypts with",
            );
        } else {
            match fit_key(c, m).1 {
                KeyFit::Exact => {}
                KeyFit::Padded { given } => s.warn(
                    "key",
                    format!(
                        "is {given} bytes, shorter than the {} bytes {} uses: it is NUL-padded as PHP does, which makes it easier to guess",
                        c.key_len(),
                        c.name()
                    ),
                    format!(
                        "use a random key of {} bytes (e.g. `openssl rand -hex {}` with key_encoding = \"hex\"), in the sender too",
                        c.key_len(),
                        c.key_len()
                    ),
                ),
                KeyFit::Truncated { given } => s.warn(
                    "key",
                    format!(
                        "is {given} bytes, longer than the {} bytes {} uses: only the first {} count, as in PHP",
                        c.key_len(),
                        c.name(),
                        c.key_len()
                    ),
                    "nothing to do if the sender is PHP (it truncates the same way); otherwise shorten the key",
                ),
            }
        }
    }
    let tag_set = s.has("tag_param");
    let iv_param = s.string("iv_param").unwrap_or_else(|| "iv".into());
    let tag_param = s.string("tag_param").unwrap_or_else(|| "tag".into());
    let gcm = cipher.map(|c| c.mode() == crate::decrypt::Mode::Gcm);
    if gcm == Some(true) && iv_param == tag_param {
        s.error(
            "tag_param",
            format!("is the same parameter as iv_param (\"{iv_param}\"), so the IV and the tag could not both be read"),
            "give the tag its own query parameter, e.g. tag_param = \"tag\"",
        );
    }
    if gcm == Some(false) && tag_set {
        s.warn(
            "tag_param",
            "has no effect: only GCM ciphers carry a tag",
            "remove it, or use an aes-…-gcm cipher if the sender sends a tag",
        );
    }
    for (key, v) in [("iv_param", &iv_param), ("tag_param", &tag_param)] {
        if v.is_empty() || v.contains(['&', '=', '#', ' ']) {
            s.error(
                key,
                format!("\"{v}\" is not a usable query parameter name"),
                "use a plain name such as \"iv\"",
            );
        }
    }
    let forward_content_type = match s.string("forward_content_type") {
        None => HeaderValue::from_static("application/json"),
        Some(ct) => match HeaderValue::from_str(&ct) {
            Ok(v) if ct.contains('/') => v,
            _ => {
                s.error(
                    "forward_content_type",
                    format!("\"{ct}\" is not a media type"),
                    "e.g. \"application/json\"",
                );
                HeaderValue::from_static("application/json")
            }
        },
    };
    let require_json = s.bool("require_json").unwrap_or(false);
    match cipher.map(Cipher::mode) {
        Some(crate::decrypt::Mode::Ctr) if !require_json => s.warn(
            "require_json",
            "is false with a CTR cipher: a wrong key or IV decrypts to garbage that is forwarded",
            "set require_json = true if the sender always encrypts JSON, or use a GCM cipher, which authenticates the body",
        ),
        Some(crate::decrypt::Mode::Cbc) if !require_json => s.warn(
            "require_json",
            "is false with a CBC cipher: a body with bad padding is refused while any other is forwarded, and that difference can be used to decrypt messages (a padding oracle) by anyone who knows the URL secret",
            "set require_json = true, or use a GCM cipher, which authenticates the body",
        ),
        _ => {}
    }
    s.finish();
    Some(DecryptConfig {
        decryptor: Decryptor::new(cipher?, &material?),
        iv_param,
        tag_param,
        forward_content_type,
        require_json,
    })
}
