//! The manifest `sealgate keys` keeps in a cert-d store: its identity and the fingerprints
//! it should hold, and the text form it is stored in.

use std::collections::BTreeSet;
use std::time::SystemTime;

/// Name of the manifest `sealgate keys` keeps in the store directory: a store identity and
/// the fingerprints it should hold, so a store that shrinks (a volume that did not mount, a
/// wrong path, deleted files) is noticed instead of turning key holders into plaintext
/// recipients.
pub const MANIFEST: &str = ".sealgate-manifest";

/// The manifest's content: which store this is and the certificates it should hold.
/// A codec without I/O ([`Manifest::parse`], [`Manifest::render`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Random identity of the store, logged at start (tells two stores apart).
    pub id: String,
    /// Lower-case hex fingerprints of the certificates `sealgate keys` stored.
    pub fingerprints: BTreeSet<String>,
}

impl Manifest {
    const MAGIC: &'static str = "sealgate-keystore 1";

    /// A manifest for a new, empty store with a fresh identity.
    pub fn new() -> Manifest {
        // An identity, not a secret: std's keyed SipHash (OS-seeded keys) over the clock.
        use std::hash::{BuildHasher, RandomState};
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let (high, low) = (
            RandomState::new().hash_one(now),
            RandomState::new().hash_one(now),
        );
        Manifest {
            id: format!("{high:016x}{low:016x}"),
            fingerprints: BTreeSet::new(),
        }
    }

    /// Parses a manifest; `#` lines and blank lines are ignored.
    ///
    /// # Errors
    /// Not a manifest, or a line that is not `id HEX` or `cert FINGERPRINT`.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        if lines.next() != Some(Self::MAGIC) {
            return Err(format!(
                "not a manifest (first line is not `{}`)",
                Self::MAGIC
            ));
        }
        let mut id = None;
        let mut fingerprints = BTreeSet::new();
        for line in lines {
            match line.split_once(' ') {
                Some(("id", value)) if id.is_none() && is_hex(value, &[32]) => {
                    id = Some(value.to_string());
                }
                Some(("cert", value)) if is_hex(value, &[40, 64]) => {
                    fingerprints.insert(value.to_ascii_lowercase());
                }
                _ => return Err(format!("unexpected line `{}`", line.escape_debug())),
            }
        }
        let id = id.ok_or("no `id` line")?;
        Ok(Manifest { id, fingerprints })
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut text = format!(
            "# sealgate key store manifest, written by `sealgate keys`: the certificates this\n\
             # store must hold. Do not edit; see sealgate(8), KEY STORE.\n{}\nid {}\n",
            Self::MAGIC,
            self.id
        );
        for fingerprint in &self.fingerprints {
            text.push_str(&format!("cert {fingerprint}\n"));
        }
        text
    }
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest::new()
    }
}

pub(crate) fn is_hex(text: &str, lengths: &[usize]) -> bool {
    lengths.contains(&text.len()) && text.chars().all(|c| c.is_ascii_hexdigit())
}
