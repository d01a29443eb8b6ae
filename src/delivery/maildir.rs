//! Maildir delivery, the embedded default: `ROOT/<recipient>/{tmp,new,cur}`. Each copy is
//! written to `tmp/`, fsynced, renamed into `new/` and the directory fsynced, and only then
//! acknowledged (the Maildir protocol's durability rule).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sealgate_protocol::{EnhancedCode, Reply};
use tokio::fs::{self, File};
use tokio::io::AsyncWriteExt;

use super::stored;
use crate::message::replies;
use crate::ops::metrics::{Metrics, NextHopError, NextHopKind};
use crate::pipeline::{Envelope, Recipient};

/// The longest file name Linux file systems take (`NAME_MAX`, in octets).
const NAME_MAX: usize = 255;

/// The Maildir tree.
pub(crate) struct Maildir {
    root: PathBuf,
    hostname: String,
    /// Makes file names unique within this process (the Maildir `Q` field).
    sequence: AtomicU64,
    /// Where storage errors are counted.
    metrics: Arc<Metrics>,
}

impl Maildir {
    /// A Maildir tree under `root`; recipient folders are created on first delivery.
    /// Storage errors are counted in `metrics`.
    pub(crate) fn new(root: &Path, hostname: &str, metrics: Arc<Metrics>) -> Maildir {
        Maildir {
            root: root.to_path_buf(),
            hostname: hostname.to_string(),
            sequence: AtomicU64::new(0),
            metrics,
        }
    }

    pub(super) async fn begin(
        &self,
        envelope: &Envelope,
        recipients: &[&Recipient],
    ) -> super::Delivery {
        let mut files = Vec::with_capacity(recipients.len());
        for rcpt in recipients {
            files.push(self.open(envelope, rcpt).await);
        }
        let delivery = Delivery {
            files,
            metrics: Arc::clone(&self.metrics),
        };
        for _ in delivery
            .files
            .iter()
            .filter(|c| matches!(c, Copy::Failed(reply) if reply.code < 500))
        {
            delivery.storage_error();
        }
        super::Delivery::Maildir(delivery)
    }

    async fn open(&self, envelope: &Envelope, rcpt: &Recipient) -> Copy {
        let name = folder_name(&rcpt.mailbox);
        if name.len() > NAME_MAX {
            // Permanent: retrying cannot make the name shorter.
            return Copy::Failed(Reply::new(
                550,
                EnhancedCode::new(5, 1, 3),
                format!(
                    "Mailbox name too long for the Maildir store ({} octets as a folder name, \
                     at most {NAME_MAX})",
                    name.len()
                ),
            ));
        }
        let folder = self.root.join(name);
        for sub in ["tmp", "new", "cur"] {
            if let Err(err) = fs::create_dir_all(folder.join(sub)).await {
                return Copy::Failed(storage_error(&err));
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let base = format!(
            "{}.M{}P{}Q{}.{}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            self.sequence.fetch_add(1, Ordering::Relaxed),
            self.hostname
        );
        let tmp = folder.join("tmp").join(&base);
        let mut file = match File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .await
        {
            Ok(file) => file,
            Err(err) => return Copy::Failed(storage_error(&err)),
        };
        // What Dovecot's own delivery adds: who sent it and to whom it was delivered.
        let prefix = format!(
            "Return-Path: <{}>\r\nDelivered-To: {}\r\n",
            envelope.reverse_path, rcpt.mailbox
        );
        if let Err(err) = file.write_all(prefix.as_bytes()).await {
            let _ = fs::remove_file(&tmp).await;
            return Copy::Failed(storage_error(&err));
        }
        Copy::Writing {
            file,
            size: prefix.len() as u64,
            tmp,
            folder,
            base,
        }
    }
}

/// One copy's files, one per recipient.
pub(crate) struct Delivery {
    files: Vec<Copy>,
    metrics: Arc<Metrics>,
}

enum Copy {
    Writing {
        file: File,
        size: u64,
        tmp: PathBuf,
        folder: PathBuf,
        base: String,
    },
    Failed(Reply),
}

impl Delivery {
    pub(super) async fn write(&mut self, data: &[u8]) {
        for copy in &mut self.files {
            if let Copy::Writing {
                file, size, tmp, ..
            } = copy
            {
                match file.write_all(data).await {
                    Ok(()) => *size += data.len() as u64,
                    Err(err) => {
                        let _ = fs::remove_file(&*tmp).await;
                        *copy = Copy::Failed(storage_error(&err));
                        self.metrics
                            .next_hop_error(NextHopKind::Maildir, NextHopError::Storage);
                    }
                }
            }
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.files.iter().any(|c| matches!(c, Copy::Writing { .. }))
    }

    pub(super) async fn finish(self) -> Vec<Reply> {
        let mut replies = Vec::with_capacity(self.files.len());
        for copy in self.files {
            replies.push(match copy {
                Copy::Failed(reply) => reply,
                Copy::Writing {
                    file,
                    size,
                    tmp,
                    folder,
                    base,
                } => match commit(file, size, &tmp, &folder, &base).await {
                    Ok(name) => stored(&name),
                    Err(err) => {
                        let _ = fs::remove_file(&tmp).await;
                        self.metrics
                            .next_hop_error(NextHopKind::Maildir, NextHopError::Storage);
                        storage_error(&err)
                    }
                },
            });
        }
        replies
    }

    fn storage_error(&self) {
        self.metrics
            .next_hop_error(NextHopKind::Maildir, NextHopError::Storage);
    }

    pub(super) async fn abort(self) {
        for copy in self.files {
            if let Copy::Writing { file, tmp, .. } = copy {
                drop(file);
                let _ = fs::remove_file(&tmp).await;
            }
        }
    }
}

/// Makes the copy durable and visible: fsync the file, rename into `new/`, fsync `new/`.
async fn commit(
    mut file: File,
    size: u64,
    tmp: &Path,
    folder: &Path,
    base: &str,
) -> io::Result<String> {
    file.flush().await?;
    file.sync_all().await?;
    drop(file);
    let name = format!("{base},S={size}");
    let new_dir = folder.join("new");
    fs::rename(tmp, new_dir.join(&name)).await?;
    File::open(&new_dir).await?.sync_all().await?;
    Ok(name)
}

/// Full disk is 452 4.3.1 (RFC 3463 "mail system full"); anything else 451 4.3.0. Both are
/// temporary: Postfix keeps the message and retries.
fn storage_error(err: &io::Error) -> Reply {
    if err.kind() == io::ErrorKind::StorageFull || err.kind() == io::ErrorKind::QuotaExceeded {
        replies::insufficient_storage()
    } else {
        replies::local_error(format!("Mail store error: {}", err.kind()))
    }
}

/// The recipient's folder name: the canonical address ([`crate::message::address`]: `Alice@`,
/// `"alice"@` and `alice@` share one folder, as they share one key), made safe as a single
/// path component (`/`, `%`, control bytes and a leading dot are %-escaped), so a hostile
/// address such as `../../etc@x` cannot leave the Maildir root.
fn folder_name(address: &str) -> String {
    let address = crate::message::address::canonical(address);
    let mut name = String::with_capacity(address.len());
    for (i, c) in address.chars().enumerate() {
        match c {
            '/' | '%' | '\\' => name.push_str(&format!("%{:02X}", c as u32)),
            '.' if i == 0 => name.push_str("%2E"),
            c if c.is_control() => name.push_str(&format!("%{:02X}", c as u32)),
            c => name.push(c),
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_stay_inside_the_root() {
        let cases = [
            ("User@Example.ORG", "user@example.org"),
            ("\"user\"@example.org", "user@example.org"),
            ("user@bücher.example", "user@xn--bcher-kva.example"),
            ("../../etc@x", "\"..%2F..%2Fetc\"@x"),
            // Not an address: lower-cased as it is, still escaped.
            ("../../etc", "\"..%2F..%2Fetc\""),
            ("a/b@x", "a%2Fb@x"),
            ("50%@x", "50%25@x"),
            ("\"a\u{1}\"@x", "\"a%01\"@x"),
            ("postmaster", "postmaster"),
        ];
        for (address, expected) in cases {
            let name = folder_name(address);
            assert_eq!(name, expected, "{address}");
            assert!(!name.contains('/') && name != "." && name != "..");
        }
    }
}
