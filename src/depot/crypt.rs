//! Boot image password hashes: SHA-512-crypt as crypt(3) writes it, with
//! opsi's rule that a hash must not contain a `.` (drawn again if it does).
//! The salt is random per renderer unless a fixed `Salt` is given (tests
//! compare written files byte for byte).

use rand::Rng;

/// The crypt(3) base-64 alphabet, in value order.
const CRYPT_ALPHABET: &[u8; 64] =
    b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// sha512-crypt's round count; 5000 is crypt's default, so the hash carries
/// no `rounds=` field (as passlib, and thus opsi, writes it).
const ROUNDS: u32 = 5000;

/// Salt length: the most sha512-crypt uses, and what opsi's passlib draws.
const SALT_LEN: usize = 16;

/// opsi refuses a hash containing `.` and draws again; the chance of needing
/// more than this many draws is below 10⁻⁸.
const MAX_HASH_DRAWS: usize = 64;

/// Why a password hash could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptError {
    /// The salt is empty, too long or has a character crypt does not use.
    #[error("a salt needs 1 to {SALT_LEN} characters of ./0-9A-Za-z")]
    BadSalt,
    /// The hash parameters were refused.
    #[error("{0}")]
    Params(String),
    /// Every random draw gave a hash with a `.`.
    #[error("no hash without '.' in {MAX_HASH_DRAWS} draws")]
    Dotted,
    /// The fixed salt gives a hash with a `.` for this password.
    #[error(
        "the fixed salt {salt} gives a hash containing '.', which opsi refuses; choose another salt"
    )]
    FixedSaltDotted {
        /// The salt.
        salt: String,
    },
}

/// A fixed salt: 1 to 16 characters of `./0-9A-Za-z`. Not a secret (every
/// hash shows its salt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salt(String);

impl Salt {
    /// Checks `salt` against crypt's alphabet and length.
    pub fn new(salt: &str) -> Result<Self, CryptError> {
        if salt.is_empty()
            || salt.len() > SALT_LEN
            || !salt.bytes().all(|b| CRYPT_ALPHABET.contains(&b))
        {
            return Err(CryptError::BadSalt);
        }
        Ok(Self(salt.to_owned()))
    }

    /// A random salt of crypt characters other than `.`: opsi rejects hashes
    /// containing a dot, so a dotted salt would only be drawn again.
    pub fn random() -> Self {
        let mut rng = rand::rng();
        Self(
            (0..SALT_LEN)
                .map(|_| char::from(CRYPT_ALPHABET[rng.random_range(1..CRYPT_ALPHABET.len())]))
                .collect(),
        )
    }

    /// The salt as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// SHA-512-crypt of `password` with `salt` (1 to 16 characters of
/// `./0-9A-Za-z`) and 5000 rounds, as crypt(3) writes it:
/// `$6$<salt>$<86 characters>`, without a `rounds=` field.
pub fn sha512_crypt(password: &str, salt: &str) -> Result<String, CryptError> {
    let salt = Salt::new(salt)?;
    let params = sha_crypt::Params::new(ROUNDS).map_err(|e| CryptError::Params(e.to_string()))?;
    let digest = sha_crypt::sha512_crypt(password.as_bytes(), salt.0.as_bytes(), params);
    let mut out = String::with_capacity(3 + salt.0.len() + 1 + 86);
    out.push_str("$6$");
    out.push_str(&salt.0);
    out.push('$');
    // The digest is written in crypt's own order: 21 groups of three bytes
    // (indices k, k+21, k+42, rotated by k mod 3), then the last byte.
    for k in 0..21 {
        let (hi, mid, lo) = match k % 3 {
            0 => (k, k + 21, k + 42),
            1 => (k + 21, k + 42, k),
            _ => (k + 42, k, k + 21),
        };
        let word =
            (u32::from(digest[hi]) << 16) | (u32::from(digest[mid]) << 8) | u32::from(digest[lo]);
        push_crypt64(&mut out, word, 4);
    }
    push_crypt64(&mut out, u32::from(digest[63]), 2);
    Ok(out)
}

/// Writes the low `chars * 6` bits of `word`, least significant first.
fn push_crypt64(out: &mut String, mut word: u32, chars: usize) {
    for _ in 0..chars {
        out.push(char::from(CRYPT_ALPHABET[(word & 0x3f) as usize]));
        word >>= 6;
    }
}

/// A sha512-crypt hash without a `.`, as opsi's `encode_password` makes
/// it: with `fixed` as the salt, or with fresh random salts drawn until one
/// gives such a hash.
pub fn dotless_hash(password: &str, fixed: Option<&Salt>) -> Result<String, CryptError> {
    if let Some(salt) = fixed {
        let hash = sha512_crypt(password, salt.as_str())?;
        if hash.contains('.') {
            return Err(CryptError::FixedSaltDotted {
                salt: salt.0.clone(),
            });
        }
        return Ok(hash);
    }
    for _ in 0..MAX_HASH_DRAWS {
        let hash = sha512_crypt(password, Salt::random().as_str())?;
        if !hash.contains('.') {
            return Ok(hash);
        }
    }
    Err(CryptError::Dotted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes made by glibc's crypt(3) (through Python 3.11's `crypt`
    /// module, `crypt.crypt(password, "$6$" + salt)`): an implementation
    /// independent of ours and of the sha-crypt crate, pinned here so the
    /// tests need neither Python nor its since removed module.
    const GLIBC: &[(&str, &str, &str)] = &[
        (
            "linux123",
            "Ab3./xYz09QrStUv",
            "$6$Ab3./xYz09QrStUv$VaQhCjKpJXfDurkSlauD6hGB.r.EJkCAQ7to9GxRlIHi2Y.ljBB8mH8HcPusCNpMc7xz0tXztboVIJb7iOHEw.",
        ),
        (
            "linux123",
            "pxeconfTestSalt9",
            "$6$pxeconfTestSalt9$CYqFOeC4PzbZUPmM12t6C75muVROl6Fq25sdg1Ng9ahYF9KyYnDcOj44pGnxL7mvip9lNgBSZXsUtlAU6t3rV/",
        ),
        (
            "linux124",
            "pxeconfTestSalt1",
            "$6$pxeconfTestSalt1$sBMDI3GYFNHqVYWy5qkj7kbdIiJ5tZEuKwUmRFbS3ae91RcwOPVaB5pUR8Bco7tEeOeMuv/aadK27EXwkvxyJ.",
        ),
        (
            "pw",
            "pxeconfTestSalt9",
            "$6$pxeconfTestSalt9$KJQeLY4KyFmIA49xNSNXqlyXOaTDrknBhmp/gJCNzQFb6yuxhcpT4y0ECSFZTTGOeErMGXZ2A1fFNYrSJj4tL0",
        ),
        (
            "secret",
            "pxeconfTestSalt1",
            "$6$pxeconfTestSalt1$DOaWHFSuCBBbz9l6Xgl0KTzBhi8o/Pyd4Lw5W5GCpFffpNxzxkclI3r5c0vBM26KzGgXd8q6ZaFzpQw0jTYqA0",
        ),
        (
            "",
            "x",
            "$6$x$QSmr1Bx2g4O6BzKvdkgOcyU6H91X6I/XBv5pSalMhSPkwdH6Beo3F455xZJg0v//bxVK5F4OE5k1.0xuR26MK0",
        ),
        (
            "ünïcödé pässwörd",
            "abc",
            "$6$abc$KOxUFN/9SuhyuDAUFtgxBxNPfRShcRkA4G6teBPXZrjEiZWC4Et23m4nh2NfsTxloRTMb2WMTS2Eyy9sAchqF/",
        ),
    ];

    /// The salt of a `$6$<salt>$<digest>` hash.
    fn salt_of(hash: &str) -> &str {
        hash.split('$').nth(2).unwrap()
    }

    #[test]
    fn sha512_crypt_matches_the_reference_vector() {
        // Ulrich Drepper's SHA-crypt specification, SHA-512 test 1.
        assert_eq!(
            sha512_crypt("Hello world!", "saltstring").unwrap(),
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
        );
    }

    #[test]
    fn sha512_crypt_matches_glibc() {
        for (password, salt, glibc) in GLIBC {
            assert_eq!(
                &sha512_crypt(password, salt).unwrap(),
                glibc,
                "{password:?}"
            );
        }
    }

    #[test]
    fn sha512_crypt_refuses_bad_salts() {
        for salt in ["", "salt$", "with space", "0123456789abcdefg"] {
            assert_eq!(
                sha512_crypt("pw", salt),
                Err(CryptError::BadSalt),
                "{salt:?}"
            );
            assert_eq!(Salt::new(salt), Err(CryptError::BadSalt), "{salt:?}");
        }
    }

    #[test]
    fn password_hashes_never_contain_a_dot() {
        // Three in four raw hashes contain a `.`; opsi draws again, so do we.
        for _ in 0..8 {
            let hash = dotless_hash("linux123", None).unwrap();
            assert!(!hash.contains('.'), "{hash}");
            assert_eq!(salt_of(&hash).len(), SALT_LEN, "{hash}");
            assert_eq!(sha512_crypt("linux123", salt_of(&hash)).unwrap(), hash);
        }
    }

    #[test]
    fn a_fixed_salt_gives_the_glibc_hash_or_refuses_a_dotted_one() {
        let salt = Salt::new("pxeconfTestSalt9").unwrap();
        assert_eq!(
            dotless_hash("linux123", Some(&salt)).unwrap(),
            GLIBC[1].2,
            "the same bytes as glibc"
        );
        assert_eq!(dotless_hash("pw", Some(&salt)).unwrap(), GLIBC[3].2);
        // `linux123` with this salt has a `.`: drawing again would not help.
        let dotted = Salt::new("Ab3./xYz09QrStUv").unwrap();
        assert_eq!(
            dotless_hash("linux123", Some(&dotted)),
            Err(CryptError::FixedSaltDotted {
                salt: "Ab3./xYz09QrStUv".into()
            })
        );
    }

    #[test]
    fn random_salts_are_full_length_and_dot_free() {
        for _ in 0..32 {
            let salt = Salt::random();
            assert_eq!(salt.as_str().len(), SALT_LEN);
            assert!(!salt.as_str().contains('.'));
            assert_eq!(Salt::new(salt.as_str()).as_ref(), Ok(&salt));
        }
    }
}
