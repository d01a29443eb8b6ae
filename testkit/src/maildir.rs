//! What a Maildir holds: the embedded Maildir next hop (`SEALGATE_NEXT_HOP=maildir:<root>`,
//! one folder per recipient under the root) and Dovecot's or Postfix's Maildir folders.
//!
//! A stored message is a file in a folder's `new/`; `tmp/` holds only what is still being
//! written. Messages come in delivery order, read from the names sealgate and Dovecot give
//! them (see [`paths`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::temp_dir;

/// A Maildir next hop's root in a fresh temporary directory (removed on drop).
pub struct Maildir {
    dir: tempfile::TempDir,
}

impl Maildir {
    /// An empty root under /tmp.
    pub fn new() -> Maildir {
        Maildir {
            dir: temp_dir("sealgate-mail-"),
        }
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The `SEALGATE_NEXT_HOP` value that stores into this root: `maildir:<root>`.
    pub fn next_hop(&self) -> String {
        format!("maildir:{}", self.path().display())
    }

    /// The folder of `rcpt` (which need not exist yet).
    pub fn folder(&self, rcpt: &str) -> PathBuf {
        self.path().join(rcpt)
    }

    /// The folders that exist, by name, sorted.
    pub fn folders(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.path())
            .unwrap_or_else(|e| panic!("read the Maildir root {}: {e}", self.path().display()))
            .map(|e| e.expect("Maildir root entry").file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The messages stored for `rcpt`, in delivery order; empty when there are none.
    pub fn messages(&self, rcpt: &str) -> Vec<Vec<u8>> {
        messages(&self.folder(rcpt))
    }

    /// The one message stored for `rcpt`; panics unless there is exactly one.
    pub fn only_message(&self, rcpt: &str) -> Vec<u8> {
        only_message(&self.folder(rcpt))
    }

    /// The paths of the messages stored for `rcpt`, in delivery order.
    pub fn paths(&self, rcpt: &str) -> Vec<PathBuf> {
        paths(&self.folder(rcpt))
    }

    /// True when nothing for `rcpt` is half-written (`tmp/` is empty or missing).
    pub fn tmp_is_empty(&self, rcpt: &str) -> bool {
        tmp_is_empty(&self.folder(rcpt))
    }
}

/// The files in `folder`'s `new/`, in delivery order; empty when it does not exist (yet).
///
/// sealgate and Dovecot name a message `<seconds>.M<microseconds>P<pid>…`, with the
/// microseconds not zero-padded: as text, `1.M99999` sorts after `1.M100000`, a message
/// delivered later in the same second. So the two numbers are compared as numbers; names of
/// another shape come last, by name.
pub fn paths(folder: &Path) -> Vec<PathBuf> {
    let new = folder.join("new");
    let entries = match fs::read_dir(&new) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("read {}: {e}", new.display()),
    };
    let mut paths: Vec<PathBuf> = entries.map(|e| e.expect("Maildir entry").path()).collect();
    paths.sort_by_cached_key(|path| delivery_order(path));
    paths
}

/// The sort key of [`paths`]: (seconds, microseconds, name) from a Maildir file name.
fn delivery_order(path: &Path) -> (u64, u64, String) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stamp = name.split_once(".M").and_then(|(seconds, rest)| {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        Some((seconds.parse().ok()?, rest[..digits].parse().ok()?))
    });
    let (seconds, micros) = stamp.unwrap_or((u64::MAX, u64::MAX));
    (seconds, micros, name)
}

/// The messages in `folder`'s `new/`, in delivery order; empty when it does not exist (yet).
pub fn messages(folder: &Path) -> Vec<Vec<u8>> {
    paths(folder)
        .iter()
        .map(|p| fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())))
        .collect()
}

/// The one message in `folder`'s `new/`; panics unless there is exactly one.
pub fn only_message(folder: &Path) -> Vec<u8> {
    let mut stored = messages(folder);
    assert_eq!(
        stored.len(),
        1,
        "messages stored in {} (want exactly one)",
        folder.display()
    );
    stored.remove(0)
}

/// True when `folder`'s `tmp/` is empty or missing: nothing is half-written.
pub fn tmp_is_empty(folder: &Path) -> bool {
    fs::read_dir(folder.join("tmp")).map_or(true, |mut d| d.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_in_the_same_second_sorts_later_though_its_name_sorts_first_as_text() {
        let mail = Maildir::new();
        let new = mail.folder("a@example.org").join("new");
        fs::create_dir_all(&new).expect("new/");
        let names = [
            "1700000000.M99999P7Q1.mx,S=10",
            "1700000000.M100000P7Q2.mx,S=10",
            "1700000001.M5P7Q3.mx,S=10",
            "not-a-maildir-name",
        ];
        // Written in reverse, so that neither creation order nor text order gives the answer.
        for name in names.iter().rev() {
            fs::write(new.join(name), name).expect("write");
        }
        let stored: Vec<String> = mail
            .messages("a@example.org")
            .into_iter()
            .map(|m| String::from_utf8(m).expect("utf-8"))
            .collect();
        assert_eq!(stored, names);
    }
}
