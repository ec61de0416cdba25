//! Helpers for Sprig functions that need more than the standard library: SHA-1, Adler-32,
//! random strings, and Go's `url.Parse` split of a URL.
//!
//! Hand-written because each is a few lines and the crates that do them are not otherwise
//! needed here; none of them is used for anything secret (Sprig's `sha1sum` is a fingerprint).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// SHA-1 of `data`, as 20 bytes (FIPS 180-4).
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

/// Adler-32 checksum (RFC 1950).
pub fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + byte as u32) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// A random 64-bit number; template output built from it is never compared, only produced.
pub fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// `n` random characters from `alphabet`.
pub fn random_string(n: usize, alphabet: &[u8]) -> String {
    (0..n)
        .map(|_| alphabet[(random_u64() % alphabet.len() as u64) as usize] as char)
        .collect()
}

/// A random version 4 UUID.
pub fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&random_u64().to_le_bytes());
    b[8..].copy_from_slice(&random_u64().to_le_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The parts of a URL as Sprig's `urlParse` names them.
#[derive(Debug, Default, PartialEq)]
pub struct UrlParts {
    pub scheme: String,
    pub userinfo: String,
    pub host: String,
    pub hostname: String,
    pub path: String,
    pub query: String,
    pub fragment: String,
    pub opaque: String,
}

/// Splits a URL the way Go's `url.Parse` does for the common forms
/// (`scheme://user:pw@host:port/path?query#fragment`, `scheme:opaque`, relative paths).
pub fn parse_url(raw: &str) -> UrlParts {
    let mut parts = UrlParts::default();
    let (rest, fragment) = raw.split_once('#').unwrap_or((raw, ""));
    parts.fragment = fragment.to_string();
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    parts.query = query.to_string();
    let mut rest = rest;
    if let Some(colon) = rest.find(':') {
        let scheme = &rest[..colon];
        if !scheme.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            parts.scheme = scheme.to_ascii_lowercase();
            rest = &rest[colon + 1..];
            if !rest.starts_with('/') {
                parts.opaque = rest.to_string();
                return parts;
            }
        }
    }
    if let Some(after) = rest.strip_prefix("//") {
        let end = after.find('/').unwrap_or(after.len());
        let authority = &after[..end];
        rest = &after[end..];
        let host = match authority.rsplit_once('@') {
            Some((user, host)) => {
                parts.userinfo = user.to_string();
                host
            }
            None => authority,
        };
        parts.host = host.to_string();
        parts.hostname = if let Some(v6) = host.strip_prefix('[') {
            v6.split(']').next().unwrap_or_default().to_string()
        } else {
            host.split(':').next().unwrap_or_default().to_string()
        };
    }
    parts.path = rest.to_string();
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn sha1_known_digests() {
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex(&sha1(b"Hello World")),
            "0a4d55a8d778e5022fab701977c5d840bbc486d0"
        );
        assert_eq!(
            hex(&sha1(&[b'a'; 1000])),
            "291e9a6c66994949b57ba5e650361e98fc36b1ba"
        );
    }

    #[test]
    fn adler32_known_sums() {
        assert_eq!(adler32(b""), 1);
        assert_eq!(adler32(b"Hello World"), 403375133);
    }

    #[test]
    fn uuid_has_version_and_variant() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!("89ab".contains(&u[19..20]));
    }

    #[test]
    fn url_parts() {
        let p = parse_url("https://user:pw@example.com:8080/p/a?q=1&r=2#frag");
        assert_eq!(p.scheme, "https");
        assert_eq!(p.userinfo, "user:pw");
        assert_eq!(p.host, "example.com:8080");
        assert_eq!(p.hostname, "example.com");
        assert_eq!(p.path, "/p/a");
        assert_eq!(p.query, "q=1&r=2");
        assert_eq!(p.fragment, "frag");
    }
}

/// Sprig's AES key from a password: its bytes, cut or padded with zeros to 32 (AES-256).
fn aes_key(password: &str) -> aes::Aes256 {
    use aes::cipher::KeyInit;
    let mut key = [0u8; 32];
    let n = password.len().min(32);
    key[..n].copy_from_slice(&password.as_bytes()[..n]);
    aes::Aes256::new(&key.into())
}

const AES_BLOCK: usize = 16;

/// Sprig's `encryptAES`: the text padded as PKCS#7, encrypted with AES-256-CBC under a random
/// IV, and the IV and the ciphertext in standard base64. An empty text stays empty. The
/// `aes` crate gives the block cipher; CBC chaining is a few XORs, done here.
pub fn encrypt_aes(password: &str, text: &str) -> Result<String, String> {
    use aes::cipher::BlockEncrypt;
    use base64::Engine as _;
    if text.is_empty() {
        return Ok(String::new());
    }
    let cipher = aes_key(password);
    let pad = AES_BLOCK - text.len() % AES_BLOCK;
    let mut out = vec![0u8; AES_BLOCK];
    getrandom::fill(&mut out).map_err(|e| format!("no random IV: {e}"))?;
    out.extend_from_slice(text.as_bytes());
    out.resize(out.len() + pad, pad as u8);
    for at in (AES_BLOCK..out.len()).step_by(AES_BLOCK) {
        let (before, block) = out.split_at_mut(at);
        let block = &mut block[..AES_BLOCK];
        for (b, p) in block.iter_mut().zip(&before[at - AES_BLOCK..]) {
            *b ^= p;
        }
        cipher.encrypt_block(block.into());
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(out))
}

/// Sprig's `decryptAES`, the reverse of [`encrypt_aes`]. Where Go's version panics (fewer than
/// two blocks, a partial block, a padding longer than the text) the template fails instead.
/// The padding is not otherwise checked, as in Sprig: a wrong password gives garbage.
pub fn decrypt_aes(password: &str, crypt64: &str) -> Result<String, String> {
    use aes::cipher::BlockDecrypt;
    use base64::Engine as _;
    if crypt64.is_empty() {
        return Ok(String::new());
    }
    let crypt = base64::engine::general_purpose::STANDARD
        .decode(crypt64)
        .map_err(|e| e.to_string())?;
    if crypt.len() < AES_BLOCK {
        return Err("ciphertext shorter than the IV".into());
    }
    let (iv, body) = crypt.split_at(AES_BLOCK);
    if body.is_empty() || body.len() % AES_BLOCK != 0 {
        return Err("crypto/cipher: input not full blocks".into());
    }
    let cipher = aes_key(password);
    let mut plain = body.to_vec();
    let mut previous = iv;
    for (block, encrypted) in plain
        .chunks_exact_mut(AES_BLOCK)
        .zip(body.chunks_exact(AES_BLOCK))
    {
        cipher.decrypt_block(block.into());
        for (b, p) in block.iter_mut().zip(previous) {
            *b ^= p;
        }
        previous = encrypted;
    }
    let pad = usize::from(plain[plain.len() - 1]);
    let end = plain
        .len()
        .checked_sub(pad)
        .ok_or_else(|| "padding longer than the text".to_string())?;
    Ok(String::from_utf8_lossy(&plain[..end]).into_owned())
}

#[cfg(test)]
mod aes_tests {
    use super::*;

    #[test]
    fn decrypts_what_sprig_encrypted_and_round_trips() {
        // Made by Promtail 2.8's `encryptAES "k" "v"`.
        assert_eq!(
            decrypt_aes("k", "lktaaUTaQ047eIodIM5GlDaV2KOIeNbVZ0RhPwzPNmc=").unwrap(),
            "v"
        );
        for text in [
            "v",
            "sixteen bytes!!!",
            "ünïcode and more than two blocks of text",
        ] {
            let crypt = encrypt_aes("a password longer than thirty-two bytes", text).unwrap();
            assert_ne!(
                crypt,
                encrypt_aes("a password longer than thirty-two bytes", text).unwrap()
            );
            assert_eq!(
                decrypt_aes("a password longer than thirty-two bytes", &crypt).unwrap(),
                text
            );
        }
        assert_eq!(encrypt_aes("k", "").unwrap(), "");
        assert!(decrypt_aes("k", "AAAA").is_err());
        assert!(decrypt_aes("k", "!!").is_err());
    }
}
