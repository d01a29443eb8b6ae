//! One incoming message, split into the copies the pipeline asks for, each streamed to the
//! next hop as it arrives. Only the header block is buffered (up to its configured limit);
//! body bytes pass straight through. Per message it records the stages' processing time, the
//! next hop's delivery time and the octets delivered ([`crate::ops::metrics`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sealgate_protocol::Reply;

use crate::delivery::Delivery;
use crate::lmtp::Context;
use crate::message::address;
use crate::message::header::{self, Head};
use crate::message::outcome::{Answer, CopyKind, RecipientOutcome};
use crate::message::received;
use crate::message::replies::{self, header_too_large, internal_error};
use crate::ops::redact;
use crate::pipeline::{Chain, Envelope, Recipient};

/// Longest queue ID taken from a Received header (Postfix's long IDs have 15 to 20
/// characters).
const MAX_QUEUE_ID: usize = 64;

/// The message in flight for one transaction.
pub(crate) struct Fanout<'a> {
    shared: &'a Context,
    envelope: &'a Envelope,
    recipients: &'a [Recipient],
    state: State,
    /// Final answers decided before delivery (a stage refused the recipient).
    refused: Vec<Option<Answer>>,
    /// What each recipient's copy is, as planned (a rewrite may decide otherwise).
    kinds: Vec<CopyKind>,
    /// Time spent per stage on this message, by stage index; the copies still open add theirs
    /// when they finish.
    stage_time: Vec<Duration>,
    /// Postfix's queue ID as found in our MTA's Received field (when XFORWARD gave none).
    queue_id: Option<String>,
    /// The Message-ID as a log token ([`crate::ops::redact::token`]), once the headers are known.
    message_id: Option<String>,
}

enum State {
    /// Collecting the header block; `scanned` bytes are known not to hold its end.
    Headers { buffer: BytesMut, scanned: usize },
    /// Streaming the body to every copy.
    Body(Vec<Copy>),
    /// The message cannot be delivered; every recipient gets this reply.
    Failed(Reply),
}

/// One distinct copy: its rewrite chain, the recipients that get it, and its delivery.
struct Copy {
    chain: Chain,
    /// Indexes into the transaction's recipients (duplicates included).
    members: Vec<usize>,
    /// For each member, its index among the distinct addresses the next hop was given.
    slot: Vec<usize>,
    delivery: Delivery,
    failure: Option<Reply>,
    /// When the delivery was opened.
    opened: Instant,
    /// Octets handed to the delivery.
    written: u64,
}

impl<'a> Fanout<'a> {
    /// Starts a message for `recipients` (the transaction's accepted RCPTs, in order), to go
    /// through `shared`'s pipeline to its next hop.
    pub(crate) fn new(
        shared: &'a Context,
        envelope: &'a Envelope,
        recipients: &'a [Recipient],
    ) -> Fanout<'a> {
        Fanout {
            shared,
            envelope,
            recipients,
            state: State::Headers {
                buffer: BytesMut::new(),
                scanned: 0,
            },
            refused: vec![None; recipients.len()],
            kinds: vec![CopyKind::Plain; recipients.len()],
            stage_time: Vec::new(),
            queue_id: None,
            message_id: None,
        }
    }

    /// Feeds the next piece of the (unstuffed) message.
    ///
    /// Once the header block is complete and the envelope has no queue ID (no XFORWARD), the
    /// `id` of the first Received field written by a trusted MTA is recorded as `queue_id` in
    /// the current span (the transaction's), before any stage logs about the message.
    pub(crate) async fn feed(&mut self, mut data: &[u8]) {
        let max_header_size = self.shared.limits.max_header_size;
        if let State::Headers { buffer, scanned } = &mut self.state {
            let before = buffer.len();
            buffer.extend_from_slice(data);
            match header::end(buffer, *scanned) {
                Some(end) if end <= max_header_size => {
                    let buffer = std::mem::take(buffer);
                    // What of `data` lies past the header block is the start of the body.
                    data = data.get(end.saturating_sub(before)..).unwrap_or_default();
                    self.start(&buffer[..end]).await;
                }
                None if buffer.len() <= max_header_size => {
                    *scanned = buffer.len();
                    return;
                }
                _ => {
                    self.state = State::Failed(header_too_large(max_header_size));
                    return;
                }
            }
        }
        if let State::Body(copies) = &mut self.state {
            for copy in copies {
                copy.body(data).await;
            }
        }
    }

    /// The message is complete: finishes every copy and waits for the next hop. Returns one
    /// final answer per recipient, in RCPT order.
    pub(crate) async fn finish(mut self) -> Vec<Answer> {
        if let State::Headers { buffer, .. } = &mut self.state {
            // No empty line: the whole message is its header block.
            let buffer = std::mem::take(buffer);
            self.start(&buffer).await;
        }
        let state = std::mem::replace(&mut self.state, State::Failed(internal_error()));
        let mut answers = std::mem::take(&mut self.refused);
        match state {
            State::Failed(reply) => {
                for a in answers.iter_mut().filter(|a| a.is_none()) {
                    *a = Some(Answer::refused(reply.clone()));
                }
            }
            State::Body(copies) => {
                for copy in copies {
                    for (member, answer) in self.finish_copy(copy).await {
                        answers[member] = Some(answer);
                    }
                }
                let metrics = &self.shared.metrics;
                let names = self.shared.pipeline.stage_names();
                for (name, elapsed) in names.iter().zip(&self.stage_time) {
                    metrics.stage_time(name, *elapsed);
                }
            }
            State::Headers { .. } => {}
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Answer::refused(internal_error())))
            .collect()
    }

    /// Finishes one copy: its members' answers; records its stage and delivery times.
    async fn finish_copy(&mut self, copy: Copy) -> Vec<(usize, Answer)> {
        let metrics = &self.shared.metrics;
        let (chain, opened, written, replies) = copy.finish().await;
        for (total, elapsed) in self.stage_time.iter_mut().zip(chain.elapsed()) {
            *total += *elapsed;
        }
        metrics.next_hop_time(self.shared.next_hop.kind(), opened.elapsed());
        if replies.iter().any(|(_, reply)| reply.is_positive()) {
            metrics.delivered(written);
        }
        let decided = chain.decided_kind();
        let fingerprint = chain.fingerprint().map(str::to_string);
        replies
            .into_iter()
            .map(|(member, reply)| {
                let kind = decided.unwrap_or(self.kinds[member]);
                let reply = match size_refusal_of_encrypted(&reply, kind, written) {
                    Some(tempfail) => {
                        tracing::warn!(
                            octets = written,
                            next_hop_reply = %reply,
                            "the next hop refused the encrypted copy for its size; tempfailed \
                             (raise the next hop's message size limit above sealgate's \
                             SEALGATE_MAX_MESSAGE_SIZE plus encryption's growth)"
                        );
                        tempfail
                    }
                    None => reply,
                };
                let outcome = RecipientOutcome::classify(reply.code, kind, false);
                let answer = Answer {
                    reply,
                    outcome,
                    fingerprint: fingerprint.clone(),
                };
                (member, answer)
            })
            .collect()
    }

    /// Postfix's queue ID from our MTA's Received field, when the envelope had none; known
    /// once the header block is.
    pub(crate) fn queue_id(&self) -> Option<&str> {
        self.queue_id.as_deref()
    }

    /// The Message-ID as a log token (a hash: it may name people), once the header block is
    /// known.
    pub(crate) fn message_id(&self) -> Option<&str> {
        self.message_id.as_deref()
    }

    /// Abandons the message: nothing is stored.
    pub(crate) async fn abort(self) {
        if let State::Body(copies) = self.state {
            for copy in copies {
                copy.delivery.abort().await;
            }
        }
    }

    /// The header block is complete: plan each recipient's copy, open one delivery per
    /// distinct copy and send it the (rewritten) header block.
    async fn start(&mut self, headers: &[u8]) {
        let shared = self.shared;
        // Tokenized once for the questions below (the stages read the block themselves).
        let head = Head::parse(headers);
        let first = received::first_in(&head);
        let trusted = received::first_trusted_in(&head, &shared.limits.trusted_mta);
        if self.envelope.queue_id.is_none()
            && let Some(id) = trusted
                .as_ref()
                .and_then(|r| r.id.clone())
                .filter(|id| id.len() <= MAX_QUEUE_ID)
                .filter(|id| id.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            tracing::Span::current().record("queue_id", id.as_str());
            self.queue_id = Some(id);
        }
        // A first Received field from a host we do not trust usually means a wrong
        // SEALGATE_TRUSTED_MTA: then no message has TLS or authentication evidence.
        if let Some(first) = &first
            && trusted.is_none()
            && shared.metrics.untrusted_received(first.by.as_deref())
        {
            tracing::warn!(
                by = first.by.as_deref().unwrap_or("(none)"),
                trusted = %shared.limits.trusted_mta.join(","),
                "first Received header not written by a SEALGATE_TRUSTED_MTA host: no TLS or \
                 authentication evidence counts for such messages (logged once per host)"
            );
        }
        self.message_id = message_id(&head).map(|id| redact::token(&id));
        self.stage_time = vec![Duration::ZERO; shared.pipeline.stage_names().len()];
        let mut copies: Vec<(Chain, Vec<usize>)> = Vec::new();
        for (i, rcpt) in self.recipients.iter().enumerate() {
            match shared.pipeline.plan(self.envelope, headers, rcpt) {
                Err(refusal) => self.refused[i] = Some(Answer::of_refusal(refusal)),
                Ok(chain) => {
                    self.kinds[i] = chain.copy_kind();
                    match copies
                        .iter_mut()
                        .find(|(c, _)| c.variant() == chain.variant())
                    {
                        Some((_, members)) => {
                            // This recipient shares an earlier copy; its plan time still counts.
                            for (total, elapsed) in self.stage_time.iter_mut().zip(chain.elapsed())
                            {
                                *total += *elapsed;
                            }
                            members.push(i);
                        }
                        None => copies.push((chain, vec![i])),
                    }
                }
            }
        }
        let mut open = Vec::with_capacity(copies.len());
        for (chain, members) in copies {
            // A duplicate RCPT gets the same reply, but the next hop stores one copy.
            // One mailbox however it is spelt (`Alice@`, `"alice"@`): one stored copy. Keyed by
            // canonical form, so 10,000 recipients cost 10,000 lookups, not 50 million.
            let mut distinct: Vec<&Recipient> = Vec::new();
            let mut seen: HashMap<String, usize> = HashMap::with_capacity(members.len());
            let mut slot = Vec::with_capacity(members.len());
            for &m in &members {
                let rcpt = &self.recipients[m];
                let s = *seen
                    .entry(address::canonical(&rcpt.mailbox))
                    .or_insert_with(|| {
                        distinct.push(rcpt);
                        distinct.len() - 1
                    });
                slot.push(s);
            }
            let opened = Instant::now();
            let delivery = shared.next_hop.begin(self.envelope, &distinct).await;
            let mut copy = Copy {
                chain,
                members,
                slot,
                delivery,
                failure: None,
                opened,
                written: 0,
            };
            copy.headers(headers).await;
            open.push(copy);
        }
        self.state = State::Body(open);
    }
}

impl Copy {
    async fn headers(&mut self, headers: &[u8]) {
        if !self.delivery.is_open() {
            return;
        }
        match self.chain.headers(headers) {
            Ok(out) => {
                self.written += out.len() as u64;
                self.delivery.write(out).await;
            }
            Err(reply) => self.failure = Some(reply),
        }
    }

    async fn body(&mut self, data: &[u8]) {
        if self.failure.is_some() || !self.delivery.is_open() {
            return;
        }
        let heavy = !self.chain.is_empty() && data.len() >= BLOCKING_CHUNK;
        match cpu_bound(heavy, || self.chain.body(data)) {
            Ok(out) => {
                self.written += out.len() as u64;
                self.delivery.write(out).await;
            }
            Err(reply) => self.failure = Some(reply),
        }
    }

    /// Ends the copy: its chain (for timings and what it became), when its delivery was
    /// opened, the octets written, and each member's reply.
    async fn finish(mut self) -> (Chain, Instant, u64, Vec<(usize, Reply)>) {
        if self.failure.is_none() && self.delivery.is_open() {
            match self.chain.finish() {
                Ok(out) => {
                    self.written += out.len() as u64;
                    self.delivery.write(out).await;
                }
                Err(reply) => self.failure = Some(reply),
            }
        }
        let replies = match self.failure {
            // A stage failed mid-message: nothing of this copy may be stored.
            Some(reply) => {
                self.delivery.abort().await;
                vec![reply; self.slot.iter().max().map_or(0, |m| m + 1)]
            }
            None => self.delivery.finish().await,
        };
        let replies = self
            .members
            .iter()
            .zip(&self.slot)
            .map(|(&member, &slot)| {
                let reply = replies.get(slot).cloned().unwrap_or_else(internal_error);
                (member, reply)
            })
            .collect();
        (self.chain, self.opened, self.written, replies)
    }
}

/// A next hop that refuses an encrypted copy for its size (552, or 5.3.4 / 5.2.3) may well
/// have taken the message as it was sent: encryption made it about a third larger. A bounce
/// would lose it for a limit the sender never exceeded, so it becomes `452 4.3.4`, which
/// Postfix retries until the limit is raised or the message expires (and the log says why).
fn size_refusal_of_encrypted(reply: &Reply, kind: CopyKind, octets: u64) -> Option<Reply> {
    let for_size = reply.code == 552
        || reply.enhanced.is_some_and(|e| {
            e.class == 5 && ((e.subject, e.detail) == (3, 4) || (e.subject, e.detail) == (2, 3))
        });
    (kind == CopyKind::Encrypted && reply.code >= 500 && for_size)
        .then(|| replies::encrypted_copy_too_big(octets))
}

/// Body chunks at least this large go through rewrites with `block_in_place`.
const BLOCKING_CHUNK: usize = 32 * 1024;

/// Runs a rewrite step. Encrypting a large chunk takes a while (about 0.25 ms per 32 KiB):
/// on the multi-threaded runtime it runs with `block_in_place`, so the worker's other
/// sessions move to another thread instead of waiting behind the cipher. Small steps run
/// inline: handing the worker off costs more than they do (measured: a context switch and a
/// cold thread per step).
fn cpu_bound<R>(heavy: bool, step: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let multi_thread =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if heavy && multi_thread {
        tokio::task::block_in_place(step)
    } else {
        step()
    }
}

/// The value of the first Message-ID field (unfolded, white space trimmed), if any.
fn message_id(head: &Head<'_>) -> Option<Vec<u8>> {
    let field = head.first("Message-ID")?;
    let colon = memchr::memchr(b':', field.raw)?;
    let value: Vec<u8> = field.raw[colon + 1..]
        .iter()
        .copied()
        .filter(|b| !matches!(b, b'\r' | b'\n'))
        .collect();
    let value = value.trim_ascii();
    (!value.is_empty()).then(|| value.to_vec())
}

#[cfg(test)]
mod tests {
    use sealgate_protocol::EnhancedCode;

    use super::*;

    #[test]
    fn an_encrypted_copy_too_big_for_the_next_hop_is_tempfailed() {
        let too_big = Reply::new(552, EnhancedCode::new(5, 3, 4), "message file too big");
        let over_quota = Reply::new(550, EnhancedCode::new(5, 2, 3), "too large for mailbox");
        let unknown = Reply::new(550, EnhancedCode::new(5, 1, 1), "no such user");
        let tempfailed = size_refusal_of_encrypted(&too_big, CopyKind::Encrypted, 11_000_000);
        let tempfailed = tempfailed.map(|r| (r.code, r.enhanced));
        assert_eq!(tempfailed, Some((452, Some(EnhancedCode::new(4, 3, 4)))));
        assert!(size_refusal_of_encrypted(&over_quota, CopyKind::Encrypted, 1).is_some());
        // Not ours to second-guess: a plain copy, or another refusal.
        assert!(size_refusal_of_encrypted(&too_big, CopyKind::Plain, 1).is_none());
        assert!(size_refusal_of_encrypted(&too_big, CopyKind::PassedEncrypted, 1).is_none());
        assert!(size_refusal_of_encrypted(&unknown, CopyKind::Encrypted, 1).is_none());
    }
}
