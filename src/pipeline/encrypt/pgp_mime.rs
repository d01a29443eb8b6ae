//! The PGP/MIME rewrite (RFC 3156) for one recipient's copy: the outer header block, the
//! inner (optionally protected, RFC 9788) header, and the sequoia writer stack streaming into
//! sealgate's armor encoder. Fail closed: after any error nothing more is written, and the
//! copy gets `451 4.3.0`.

use std::fmt;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::BytesMut;
use sealgate_protocol::Reply;
use self_cell::self_cell;
use sequoia_openpgp::Cert;
use sequoia_openpgp::serialize::stream::{Encryptor, LiteralWriter, Message};
use sequoia_openpgp::types::{DataFormat, SymmetricAlgorithm};

use crate::message::replies;
use crate::openpgp;
use crate::ops::metrics::Metrics;
use crate::pipeline::encrypt::armor::ArmorEncoder;
use crate::pipeline::encrypt::mime::{self, Field, HeaderSplit};
use crate::pipeline::encrypt::verify::{Reason, Verdict, Verifier};
use crate::pipeline::{CopyKind, Rewrite};

/// The fields copied into the encrypted part when protected headers are on (RFC 9788,
/// Autocrypt's list).
const PROTECTED_FIELDS: [&str; 8] = [
    "Subject",
    "From",
    "To",
    "Cc",
    "Reply-To",
    "Message-ID",
    "References",
    "In-Reply-To",
];

/// What an outer Subject shows when protected headers are on.
const HIDDEN_SUBJECT: &str = "...";

/// The MIME preamble, as Thunderbird writes it; readers that understand PGP/MIME skip it.
const PREAMBLE: &str = "This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)";

/// Octets in a MIME boundary after `sealgate-` (hex-encoded, so twice as many characters).
pub(super) const BOUNDARY_OCTETS: usize = 16;

/// A new MIME boundary: `sealgate-` and 128 unpredictable bits in hex.
///
/// A boundary must only not occur in the part it delimits, and no armor line can hold `-`,
/// so it need not be secret: it comes from std's keyed SipHash (keys drawn from the OS once
/// per thread) over a counter, not from sequoia's CSPRNG, which instantiates a new DRBG
/// (getrandom, HMAC-SHA-512) for every call.
pub(super) fn new_boundary() -> String {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Every RandomState::new() on a thread uses fresh keys (it advances them).
    let high = RandomState::new().hash_one(n);
    let low = RandomState::new().hash_one(n);
    let boundary = format!("sealgate-{high:016x}{low:016x}");
    debug_assert_eq!(boundary.len(), "sealgate-".len() + 2 * BOUNDARY_OCTETS);
    boundary
}

/// The fingerprints of `certs`, upper-case hex, joined by `, `.
pub(crate) fn fingerprints(certs: &[Arc<Cert>]) -> String {
    certs
        .iter()
        .map(|cert| cert.fingerprint().to_hex())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rewrite for one recipient: the message as PGP/MIME, encrypted to every one of
/// `certs` (one PKESK per encryption subkey).
///
/// Messages that may be already encrypted are held back up to `peek_limit` octets (header
/// block included) while [`Verifier`] checks them; only a verified one passes through,
/// anything else (past the limit included) is encrypted. Otherwise memory is the fixed
/// buffers of the writer stack.
pub struct PgpMime {
    certs: Vec<Arc<Cert>>,
    fingerprint: String,
    protected_headers: bool,
    peek_limit: usize,
    /// Where the writer stack's output collects until it is moved to `out`.
    pub(super) sink: SharedSink,
    /// The MIME boundary, once encryption has started.
    pub(super) boundary: String,
    state: State,
    /// What the copy became, once decided.
    made: Option<CopyKind>,
    /// Where encryption failures and unverified encrypted-looking messages are counted.
    metrics: Arc<Metrics>,
}

enum State {
    /// Waiting for the header block.
    Start,
    /// Verifying whether the message is already encrypted; the verifier holds it so far.
    Holding {
        verifier: Verifier,
        header_len: usize,
    },
    /// Already encrypted: passed through unchanged.
    Clear,
    /// Encrypting.
    Sealing(Sealer),
    /// Finished, or failed (nothing more may be written).
    Done,
}

type Writer<'a> = Option<Message<'a>>;

self_cell!(
    /// The sequoia writer stack, which borrows the certificate it encrypts to, together
    /// with that certificate.
    struct Sealer {
        owner: Vec<Arc<Cert>>,

        #[not_covariant]
        dependent: Writer,
    }
);

impl Sealer {
    /// Builds `Message → Encryptor → LiteralWriter` for the holders of `certs`, writing
    /// into `sink`, which armors it with CRLF line ends.
    fn start(certs: Vec<Arc<Cert>>, sink: SharedSink) -> sequoia_openpgp::Result<Sealer> {
        Sealer::try_new(certs, |certs| {
            // Forces SEIPDv1 for v4 certificates (trap 1) and checks revocation (trap 2).
            let mut recipients = Vec::new();
            for cert in certs {
                recipients.extend(openpgp::recipients(cert).map_err(|reason| {
                    sequoia_openpgp::Error::InvalidOperation(format!("key unusable: {reason}"))
                })?);
            }
            let message = Message::new(sink);
            let message = Encryptor::for_recipients(message, recipients)
                .symmetric_algo(SymmetricAlgorithm::AES256)
                .build()?;
            let message = LiteralWriter::new(message)
                .format(DataFormat::Binary)
                .build()?;
            Ok(Some(message))
        })
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.with_dependent_mut(|_, writer| match writer {
            Some(message) => message.write_all(data),
            None => Err(io::Error::other("the OpenPGP message is already finished")),
        })
    }

    /// Closes sequoia's layers: literal data, MDC. The armor is the caller's to finish.
    fn finish(&mut self) -> sequoia_openpgp::Result<()> {
        self.with_dependent_mut(|_, writer| match writer.take() {
            Some(message) => message.finalize(),
            None => Ok(()),
        })
    }
}

impl PgpMime {
    /// A rewrite that encrypts to every one of `certs`, counting in `metrics`; see
    /// [`super::EncryptConfig::peek_limit`].
    pub fn new(
        certs: Vec<Arc<Cert>>,
        protected_headers: bool,
        peek_limit: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        PgpMime {
            fingerprint: fingerprints(&certs),
            certs,
            protected_headers,
            peek_limit,
            sink: SharedSink::default(),
            boundary: String::new(),
            state: State::Start,
            made: None,
            metrics,
        }
    }

    /// Starts encrypting: emits the outer header block and the MIME parts up to the armored
    /// message, then feeds the inner header and what is known of the body to the encryptor.
    /// Nothing is emitted if the writer stack cannot be built.
    fn start_sealing(
        &mut self,
        headers: &[u8],
        body: &[&[u8]],
        out: &mut BytesMut,
    ) -> Result<(), Reply> {
        self.boundary = new_boundary();
        let mut sealer =
            Sealer::start(self.certs.clone(), self.sink.clone()).map_err(|e| self.fail(e))?;
        let split = mime::split_header_block(headers);
        out.extend_from_slice(&outer_header(
            &split,
            &self.boundary,
            &self.fingerprint,
            self.protected_headers,
        ));
        let inner = inner_header(&split, self.protected_headers);
        for piece in [&inner[..], split.body]
            .into_iter()
            .chain(body.iter().copied())
        {
            sealer.write(piece).map_err(|e| self.fail(e))?;
        }
        self.sink.drain_into(out);
        self.state = State::Sealing(sealer);
        self.made = Some(CopyKind::Encrypted);
        Ok(())
    }

    /// Encrypts the held message (and `rest`, which the verifier did not keep), saying why it
    /// was not passed through.
    fn seal_held(
        &mut self,
        reason: Reason,
        held: &[u8],
        header_len: usize,
        rest: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), Reply> {
        let fingerprint = &self.fingerprint;
        match reason {
            // Ordinary mail: nothing to say.
            Reason::NotAnEncryptedForm(_) => {}
            _ => {
                tracing::warn!(
                    fingerprint,
                    reason = %reason,
                    "looks encrypted but is not verified: encrypting"
                );
                self.metrics.unverified_encrypted(reason.kind());
            }
        }
        let (headers, body) = held.split_at(header_len.min(held.len()));
        self.start_sealing(headers, &[body, rest], out)
    }

    /// Verified already encrypted: emits what is known so far, and the rest unchanged.
    fn pass_through(&mut self, form: &str, so_far: &[u8], out: &mut BytesMut) {
        let fingerprint = &self.fingerprint;
        tracing::info!(
            fingerprint,
            form,
            "verified already encrypted: stored as received"
        );
        out.extend_from_slice(so_far);
        self.state = State::Clear;
        self.made = Some(CopyKind::PassedEncrypted);
    }

    /// Logs `err` and turns it into the reply for this copy; nothing more is written.
    fn fail(&mut self, err: impl fmt::Display) -> Reply {
        // Counted once per copy: calls after the first failure fail again, uncounted.
        let first = !matches!(self.state, State::Done);
        self.state = State::Done;
        if first {
            self.metrics.encryption_failure();
        }
        tracing::error!(fingerprint = %self.fingerprint, %err, "encryption failed");
        replies::local_error("Encryption failed, try again later")
    }
}

impl Rewrite for PgpMime {
    fn variant(&self) -> String {
        format!("encrypt:{}", self.fingerprint)
    }

    fn copy_kind(&self) -> Option<CopyKind> {
        self.made
    }

    fn fingerprint(&self) -> Option<&str> {
        (self.made == Some(CopyKind::Encrypted)).then_some(self.fingerprint.as_str())
    }

    fn headers(&mut self, headers: &[u8], out: &mut BytesMut) -> Result<(), Reply> {
        if !matches!(self.state, State::Start) {
            return Err(self.fail("header block out of sequence"));
        }
        let mut verifier = Verifier::new(self.peek_limit);
        match verifier.feed(headers) {
            None => {
                self.state = State::Holding {
                    verifier,
                    header_len: headers.len(),
                };
                Ok(())
            }
            // Whether or not the verifier kept them, these are the header block.
            Some(reason) => self.seal_held(reason, headers, headers.len(), &[], out),
        }
    }

    fn body(&mut self, chunk: &[u8], out: &mut BytesMut) -> Result<(), Reply> {
        match &mut self.state {
            State::Clear => {
                out.extend_from_slice(chunk);
                Ok(())
            }
            State::Sealing(sealer) => {
                let written = sealer.write(chunk);
                self.sink.drain_into(out);
                written.map_err(|e| self.fail(e))
            }
            State::Holding {
                verifier,
                header_len,
            } => {
                let header_len = *header_len;
                let Some(reason) = verifier.feed(chunk) else {
                    return Ok(());
                };
                let held = std::mem::replace(verifier, Verifier::new(0)).into_held();
                let rest = if reason == Reason::BeyondWindow {
                    chunk
                } else {
                    &[]
                };
                self.seal_held(reason, &held, header_len, rest, out)
            }
            State::Start | State::Done => Err(self.fail("body out of sequence")),
        }
    }

    fn finish(&mut self, out: &mut BytesMut) -> Result<(), Reply> {
        if let State::Holding {
            verifier,
            header_len,
        } = &mut self.state
        {
            let header_len = *header_len;
            let verdict = verifier.finish();
            let held = std::mem::replace(verifier, Verifier::new(0)).into_held();
            match verdict {
                Verdict::Verified(form) => self.pass_through(form.as_str(), &held, out),
                Verdict::NotVerified(reason) => {
                    self.seal_held(reason, &held, header_len, &[], out)?;
                }
            }
        }
        match std::mem::replace(&mut self.state, State::Done) {
            State::Clear => Ok(()),
            State::Sealing(mut sealer) => {
                let finished = sealer.finish().and_then(|()| Ok(self.sink.finish()?));
                self.sink.drain_into(out);
                finished.map_err(|e| self.fail(e))?;
                out.extend_from_slice(format!("\r\n--{}--\r\n", self.boundary).as_bytes());
                Ok(())
            }
            State::Start | State::Holding { .. } | State::Done => {
                Err(self.fail("end of message out of sequence"))
            }
        }
    }
}

/// The new top-level header block: the outer fields as received, then the PGP/MIME
/// structure up to the start of the armored message.
fn outer_header(
    split: &HeaderSplit<'_>,
    boundary: &str,
    fingerprint: &str,
    protect: bool,
) -> Vec<u8> {
    let mut h = Vec::with_capacity(1024);
    for field in &split.outer {
        if protect && field.is("Subject") {
            h.extend_from_slice(field_name_with_colon(field));
            h.extend_from_slice(format!(" {HIDDEN_SUBJECT}\r\n").as_bytes());
        } else {
            push_field(&mut h, field.raw);
        }
    }
    if !split.has_mime_version {
        h.extend_from_slice(b"MIME-Version: 1.0\r\n");
    }
    h.extend_from_slice(
        format!(
            "Content-Type: multipart/encrypted;\r\n \
             protocol=\"application/pgp-encrypted\";\r\n \
             boundary=\"{boundary}\"\r\n\
             X-Sealgate-Encrypted: {fingerprint}\r\n\
             \r\n\
             {PREAMBLE}\r\n\
             --{boundary}\r\n\
             Content-Type: application/pgp-encrypted\r\n\
             Content-Description: PGP/MIME version identification\r\n\
             \r\n\
             Version: 1\r\n\
             \r\n\
             --{boundary}\r\n\
             Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\
             Content-Description: OpenPGP encrypted message\r\n\
             Content-Disposition: inline; filename=\"encrypted.asc\"\r\n\
             \r\n"
        )
        .as_bytes(),
    );
    h
}

/// The header section of the encrypted entity: the original `Content-*` fields (or
/// `text/plain`), with protected headers also copies of the protected fields and an
/// `HP-Outer` line for the hidden Subject; then the empty line.
fn inner_header(split: &HeaderSplit<'_>, protect: bool) -> Vec<u8> {
    let mut h = Vec::with_capacity(256);
    if protect {
        let protected = |f: &&Field<'_>| PROTECTED_FIELDS.iter().any(|name| f.is(name));
        for field in split.outer.iter().filter(protected) {
            push_field(&mut h, field.raw);
        }
        for field in split.outer.iter().filter(|f| f.is("Subject")) {
            h.extend_from_slice(b"HP-Outer: ");
            h.extend_from_slice(field_name_with_colon(field));
            h.extend_from_slice(format!(" {HIDDEN_SUBJECT}\r\n").as_bytes());
        }
    }
    // RFC 9788 marks the inner header section as protected with `hp`; Thunderbird reads
    // Autocrypt's `protected-headers`.
    let parameters = ";\r\n hp=\"cipher\"; protected-headers=\"v1\"\r\n";
    let mut marked = !protect;
    for field in &split.content {
        if !marked && field.is("Content-Type") {
            let raw = field.raw.strip_suffix(b"\r\n").unwrap_or(field.raw);
            h.extend_from_slice(raw);
            h.extend_from_slice(parameters.as_bytes());
            marked = true;
        } else {
            push_field(&mut h, field.raw);
        }
    }
    if split.content.iter().all(|f| !f.is("Content-Type")) {
        h.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii");
        h.extend_from_slice(if protect {
            parameters.as_bytes()
        } else {
            b"\r\n"
        });
    }
    h.extend_from_slice(b"\r\n");
    h
}

/// Appends a field, adding the CRLF the last line of an unterminated block lacks.
fn push_field(h: &mut Vec<u8>, raw: &[u8]) {
    h.extend_from_slice(raw);
    if !raw.ends_with(b"\r\n") {
        h.extend_from_slice(b"\r\n");
    }
}

/// The field up to and including its colon, as written.
pub(super) fn field_name_with_colon<'a>(field: &Field<'a>) -> &'a [u8] {
    memchr::memchr(b':', field.raw).map_or(field.raw, |colon| &field.raw[..=colon])
}

/// The bottom of the writer stack: the armor encoder, shared with [`PgpMime`], which drains
/// its output into the copy after every step (so it never holds more than one step's
/// worth) and finishes the armor once sequoia has closed its layers.
#[derive(Clone, Default)]
pub(super) struct SharedSink(Arc<Mutex<ArmorEncoder>>);

impl SharedSink {
    pub(super) fn lock(&self) -> MutexGuard<'_, ArmorEncoder> {
        // A panic while holding the lock cannot leave the encoder unsafe to use.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn drain_into(&self, out: &mut BytesMut) {
        let mut armor = self.lock();
        let output = armor.output();
        out.extend_from_slice(output);
        output.clear();
    }

    /// Writes the armor's last line, checksum and footer.
    fn finish(&self) -> io::Result<()> {
        self.lock().finish()
    }
}

impl Write for SharedSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.lock().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
