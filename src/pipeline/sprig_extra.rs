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
