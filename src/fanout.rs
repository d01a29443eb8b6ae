//! One incoming message, split into the copies the pipeline asks for, each streamed to the
//! next hop as it arrives. Only the header block is buffered (up to its configured limit);
//! body bytes pass straight through.

use bytes::BytesMut;
use sealgate_protocol::{EnhancedCode, Reply};

use crate::delivery::{Delivery, NextHop};
use crate::pipeline::{Chain, Envelope, Pipeline, Recipient};

/// The message in flight for one transaction.
pub struct Fanout<'a> {
    pipeline: &'a Pipeline,
    next_hop: &'a NextHop,
    envelope: &'a Envelope,
    recipients: &'a [Recipient],
    max_header_size: usize,
    state: State,
    /// Final replies decided before delivery (a stage refused the recipient).
    refused: Vec<Option<Reply>>,
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
}

impl<'a> Fanout<'a> {
    /// Starts a message for `recipients` (the transaction's accepted RCPTs, in order).
    pub fn new(
        pipeline: &'a Pipeline,
        next_hop: &'a NextHop,
        envelope: &'a Envelope,
        recipients: &'a [Recipient],
        max_header_size: usize,
    ) -> Fanout<'a> {
        Fanout {
            pipeline,
            next_hop,
            envelope,
            recipients,
            max_header_size,
            state: State::Headers {
                buffer: BytesMut::new(),
                scanned: 0,
            },
            refused: vec![None; recipients.len()],
        }
    }

    /// Feeds the next piece of the (unstuffed) message.
    pub async fn feed(&mut self, mut data: &[u8]) {
        if let State::Headers { buffer, scanned } = &mut self.state {
            let before = buffer.len();
            buffer.extend_from_slice(data);
            match header_end(buffer, *scanned) {
                Some(end) if end <= self.max_header_size => {
                    let buffer = std::mem::take(buffer);
                    // What of `data` lies past the header block is the start of the body.
                    data = data.get(end.saturating_sub(before)..).unwrap_or_default();
                    self.start(&buffer[..end]).await;
                }
                None if buffer.len() <= self.max_header_size => {
                    *scanned = buffer.len();
                    return;
                }
                _ => {
                    self.state = State::Failed(header_too_large(self.max_header_size));
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
    /// final reply per recipient, in RCPT order.
    pub async fn finish(mut self) -> Vec<Reply> {
        if let State::Headers { buffer, .. } = &mut self.state {
            // No empty line: the whole message is its header block.
            let buffer = std::mem::take(buffer);
            self.start(&buffer).await;
        }
        let mut replies = self.refused;
        match self.state {
            State::Failed(reply) => {
                for r in replies.iter_mut().filter(|r| r.is_none()) {
                    *r = Some(reply.clone());
                }
            }
            State::Body(copies) => {
                for copy in copies {
                    let delivered = copy.finish().await;
                    for (member, reply) in delivered {
                        replies[member] = Some(reply);
                    }
                }
            }
            State::Headers { .. } => {}
        }
        replies
            .into_iter()
            .map(|r| r.unwrap_or_else(internal_error))
            .collect()
    }

    /// Abandons the message: nothing is stored.
    pub async fn abort(self) {
        if let State::Body(copies) = self.state {
            for copy in copies {
                copy.delivery.abort().await;
            }
        }
    }

    /// The header block is complete: plan each recipient's copy, open one delivery per
    /// distinct copy and send it the (rewritten) header block.
    async fn start(&mut self, headers: &[u8]) {
        let mut copies: Vec<(Chain, Vec<usize>)> = Vec::new();
        for (i, rcpt) in self.recipients.iter().enumerate() {
            match self.pipeline.plan(self.envelope, headers, rcpt) {
                Err(reply) => self.refused[i] = Some(reply),
                Ok(chain) => match copies
                    .iter_mut()
                    .find(|(c, _)| c.variant() == chain.variant())
                {
                    Some((_, members)) => members.push(i),
                    None => copies.push((chain, vec![i])),
                },
            }
        }
        let mut open = Vec::with_capacity(copies.len());
        for (chain, members) in copies {
            // A duplicate RCPT gets the same reply, but the next hop stores one copy.
            let mut distinct: Vec<&Recipient> = Vec::new();
            let mut slot = Vec::with_capacity(members.len());
            for &m in &members {
                let rcpt = &self.recipients[m];
                match distinct.iter().position(|d| d.mailbox == rcpt.mailbox) {
                    Some(s) => slot.push(s),
                    None => {
                        slot.push(distinct.len());
                        distinct.push(rcpt);
                    }
                }
            }
            let delivery = self.next_hop.begin(self.envelope, &distinct).await;
            let mut copy = Copy {
                chain,
                members,
                slot,
                delivery,
                failure: None,
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
            Ok(out) => self.delivery.write(out).await,
            Err(reply) => self.failure = Some(reply),
        }
    }

    async fn body(&mut self, data: &[u8]) {
        if self.failure.is_some() || !self.delivery.is_open() {
            return;
        }
        let heavy = !self.chain.is_empty() && data.len() >= BLOCKING_CHUNK;
        match cpu_bound(heavy, || self.chain.body(data)) {
            Ok(out) => self.delivery.write(out).await,
            Err(reply) => self.failure = Some(reply),
        }
    }

    async fn finish(mut self) -> Vec<(usize, Reply)> {
        if self.failure.is_none() && self.delivery.is_open() {
            match self.chain.finish() {
                Ok(out) => self.delivery.write(out).await,
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
        self.members
            .iter()
            .zip(&self.slot)
            .map(|(&member, &slot)| {
                let reply = replies.get(slot).cloned().unwrap_or_else(internal_error);
                (member, reply)
            })
            .collect()
    }
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

/// Where the header block ends (just past its empty line), searching from `scanned`.
fn header_end(buffer: &[u8], scanned: usize) -> Option<usize> {
    if buffer.starts_with(b"\r\n") {
        return Some(2);
    }
    let from = scanned.saturating_sub(3);
    memchr::memmem::find(&buffer[from..], b"\r\n\r\n").map(|i| from + i + 4)
}

fn header_too_large(limit: usize) -> Reply {
    Reply::new(
        552,
        EnhancedCode::new(5, 3, 4),
        format!("Message header block exceeds {limit} octets"),
    )
}

fn internal_error() -> Reply {
    Reply::new(
        451,
        EnhancedCode::new(4, 3, 0),
        "Internal error, try again later",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_block_end() {
        assert_eq!(header_end(b"\r\nbody", 0), Some(2));
        assert_eq!(header_end(b"A: b\r\n\r\nbody", 0), Some(8));
        assert_eq!(header_end(b"A: b\r\nC: d\r\n", 0), None);
        // The end straddles what was already scanned.
        assert_eq!(header_end(b"A: b\r\n\r\n", 6), Some(8));
        assert_eq!(header_end(b"A: b\n\nbody", 0), None);
    }
}
