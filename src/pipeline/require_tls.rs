//! The require-TLS stage: secure addresses (`SEALGATE_SECURE_DOMAINS`,
//! `SEALGATE_SECURE_MAILBOXES`, the key database's `mailbox_flags`) get mail only if it
//! reached our MTA over TLS. A recipient whose rule cannot be told (the database away too
//! long) is accepted over TLS and tempfailed (`451 4.7.0`) without it.
//!
//! Before the queue (the milter) the envelope carries the TLS evidence of Postfix's macros, and
//! the verdict ([`tls_verdict`]) comes at RCPT time. After the queue (LMTP) TLS is known only
//! from our MTA's `Received:` field, which arrives with the header block; so at RCPT time this
//! stage only routes a secure twin to its real mailbox, and the verdict comes once the header
//! block is complete. A refused recipient gets its `550 5.7.1` at the end of DATA; the others
//! of the same message are not affected.

use std::sync::Arc;

use bytes::BytesMut;
use sealgate_protocol::Reply;

use crate::message::outcome::RefusalReason;
use crate::message::tls::TlsVersion;
use crate::message::tls::{TlsEvidence, tls_verdict};
use crate::message::{address, replies};
use crate::ops::redact::AddressLog;
use crate::pipeline::Prefetch;
use crate::pipeline::{Envelope, Plan, Recipient, Rewrite, Stage};
use crate::store::{SecureLookup, TlsRule};

/// The stage's name ([`Stage::name`]); its refusals are [`RefusalReason::NoTls`].
pub(crate) const NAME: &str = "require_tls";

/// The header field that tells the stored copy of a secure twin which address it was sent to.
pub(crate) const ORIGINAL_TO: &str = "X-Original-To";

/// Enforces TLS-only receipt for secure addresses and routes secure twins to their mailbox.
pub(crate) struct RequireTlsStage {
    /// Asked in order; the first `Required` decides, an `Unknown` counts only if none is.
    secure: Vec<Arc<dyn SecureLookup>>,
    /// Host names of our own MTAs (lower-case): only their Received field is evidence.
    trusted: Vec<String>,
    /// The lowest TLS version a secure address accepts.
    min: TlsVersion,
    /// How addresses appear in logs.
    log: AddressLog,
}

impl RequireTlsStage {
    /// The stage for the lookups in `secure`, trusting the Received fields written by `trusted_mta`
    /// (`SEALGATE_TRUSTED_MTA`, lower-case) and requiring at least `min`
    /// (`SEALGATE_TLS_MIN_VERSION`); addresses are logged as `log` says.
    pub(crate) fn new(
        secure: Vec<Arc<dyn SecureLookup>>,
        trusted_mta: Vec<String>,
        min: TlsVersion,
        log: AddressLog,
    ) -> RequireTlsStage {
        RequireTlsStage {
            secure,
            trusted: trusted_mta,
            min,
            log,
        }
    }
}

impl RequireTlsStage {
    /// What the lookups say of `address`: required if any requires it, else unknown if any
    /// cannot tell, else optional.
    fn rule(&self, address: &str) -> TlsRule {
        let mut unknown = None;
        for lookup in &self.secure {
            match lookup.tls_rule(address) {
                required @ TlsRule::Required { .. } => return required,
                rule @ TlsRule::Unknown { .. } => {
                    unknown.get_or_insert(rule);
                }
                TlsRule::Optional => {}
            }
        }
        unknown.unwrap_or(TlsRule::Optional)
    }

    /// `evidence` for a recipient whose rule is unknown: TLS enough for any secure address
    /// passes; anything less is a tempfail naming the cause (never a bounce).
    fn unknown_verdict(
        &self,
        rcpt: &Recipient,
        evidence: &TlsEvidence,
        reason: &str,
    ) -> Result<(), Reply> {
        if tls_verdict(&rcpt.address, evidence, self.min).is_ok() {
            return Ok(());
        }
        tracing::warn!(
            rcpt = %self.log.show(&rcpt.address), %evidence, reason,
            "tempfailed: cannot tell whether this address requires TLS"
        );
        Err(replies::tls_rule_unknown(&rcpt.address, reason))
    }
}

impl Stage for RequireTlsStage {
    fn name(&self) -> &'static str {
        NAME
    }

    fn refusal_reason(&self) -> RefusalReason {
        RefusalReason::NoTls
    }

    fn needs_prefetch(&self) -> bool {
        self.secure.iter().any(|lookup| lookup.needs_prefetch())
    }

    fn prefetch<'a>(&'a self, addresses: &'a [&'a str]) -> Prefetch<'a> {
        Box::pin(async move {
            for lookup in self.secure.iter().filter(|l| l.needs_prefetch()) {
                lookup.prefetch(addresses).await;
            }
        })
    }

    /// Routes a secure address to its mailbox (`user@secure.example.org` → `user@example.org`).
    /// With the envelope's TLS evidence (the milter) it decides now; without it (LMTP) it
    /// accepts: whether TLS was used shows only in the header block.
    fn check_recipient(&self, envelope: &Envelope, rcpt: &mut Recipient) -> Result<(), Reply> {
        let mailbox = match self.rule(&rcpt.address) {
            TlsRule::Optional => return Ok(()),
            TlsRule::Unknown { reason } => {
                return match &envelope.tls {
                    Some(evidence) => self.unknown_verdict(rcpt, evidence, &reason),
                    None => Ok(()),
                };
            }
            TlsRule::Required { mailbox } => mailbox,
        };
        if let Some(evidence) = &envelope.tls {
            tls_verdict(&rcpt.address, evidence, self.min)?;
            let shown = self.log.show(&rcpt.address);
            tracing::debug!(rcpt = %shown, %evidence, "TLS-only address: accepted");
        }
        rcpt.mailbox = mailbox;
        Ok(())
    }

    fn plan(&self, envelope: &Envelope, headers: &[u8], rcpt: &Recipient) -> Result<Plan, Reply> {
        let rule = self.rule(&rcpt.address);
        if rule == TlsRule::Optional {
            return Ok(Plan::Unchanged);
        }
        let evidence = match &envelope.tls {
            Some(evidence) => evidence.clone(),
            None => TlsEvidence::from_received(headers, &self.trusted),
        };
        if let TlsRule::Unknown { reason } = &rule {
            self.unknown_verdict(rcpt, &evidence, reason)?;
            return Ok(Plan::Unchanged);
        }
        let shown = self.log.show(&rcpt.address);
        if let Err(reply) = tls_verdict(&rcpt.address, &evidence, self.min) {
            tracing::warn!(
                rcpt = %shown, %evidence, min = %self.min,
                "refused: TLS required for this address"
            );
            return Err(reply);
        }
        tracing::debug!(rcpt = %shown, %evidence, "TLS-only address: accepted");
        // A twin's copy is stored in another mailbox: say which address it was sent to. Compare
        // canonical forms (a bare secure domain in upper case or as U-labels is not a twin).
        if address::canonical(&rcpt.mailbox) == address::canonical(&rcpt.address) {
            return Ok(Plan::Unchanged);
        }
        Ok(Plan::Rewrite(Box::new(OriginalTo::new(&rcpt.address))))
    }
}

/// Prepends `X-Original-To: <address>` to the header block; the body passes unchanged.
struct OriginalTo {
    address: String,
    /// The header line, with CRLF.
    line: String,
}

impl OriginalTo {
    fn new(address: &str) -> OriginalTo {
        OriginalTo {
            address: address.to_string(),
            line: format!("{ORIGINAL_TO}: {address}\r\n"),
        }
    }
}

impl Rewrite for OriginalTo {
    fn variant(&self) -> String {
        format!("original-to:{}", self.address)
    }

    fn headers(&mut self, headers: &[u8], out: &mut BytesMut) -> Result<(), Reply> {
        out.extend_from_slice(self.line.as_bytes());
        out.extend_from_slice(headers);
        Ok(())
    }

    fn body(&mut self, chunk: &[u8], out: &mut BytesMut) -> Result<(), Reply> {
        out.extend_from_slice(chunk);
        Ok(())
    }

    fn finish(&mut self, _out: &mut BytesMut) -> Result<(), Reply> {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pipeline::Pipeline;
    use crate::store::secure::SecureAddresses;
    use sealgate_protocol::EnhancedCode;

    const TLS12: &str = "Received: from client.example.net (unknown [192.0.2.1])\r\n\
        \t(using TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits))\r\n\
        \t(No client certificate requested)\r\n\
        \tby mx.test.example (Postfix) with ESMTPS id 79C45C8770;\r\n\
        \tSun, 22 Nov 2026 12:41:13 +0000 (UTC)\r\n";

    const PLAIN: &str = "Received: from client.example.net (unknown [192.0.2.1])\r\n\
        \tby mx.test.example (Postfix) with ESMTP id 3D78AC876E;\r\n\
        \tSun, 22 Nov 2026 12:41:13 +0000 (UTC)\r\n";

    const REST: &str = "From: a@example.net\r\nSubject: hi\r\n\r\n";

    fn stage(min: TlsVersion) -> RequireTlsStage {
        let secure = SecureAddresses::new(
            vec![
                ("secure.example.org".into(), "example.org".into()),
                ("vault.example.net".into(), "vault.example.net".into()),
            ],
            None,
        )
        .unwrap();
        RequireTlsStage::new(
            vec![Arc::new(secure)],
            vec!["mx.test.example".into()],
            min,
            AddressLog::Full,
        )
    }

    fn envelope() -> Envelope {
        Envelope {
            queue_id: Some("79C45C8770".into()),
            ..Envelope::default()
        }
    }

    /// RCPT then header time, as the session does: `Ok(variant)` or the refusal's text.
    fn run(stage: &RequireTlsStage, headers: &str, address: &str) -> Result<String, String> {
        let envelope = envelope();
        let mut rcpt = Recipient::new(address.into());
        stage.check_recipient(&envelope, &mut rcpt).unwrap();
        match stage.plan(&envelope, headers.as_bytes(), &rcpt) {
            Ok(Plan::Unchanged) => Ok(String::new()),
            Ok(Plan::Rewrite(rewrite)) => Ok(rewrite.variant()),
            Err(reply) => {
                assert_eq!(reply.code, 550);
                assert_eq!(reply.enhanced, Some(EnhancedCode::new(5, 7, 1)));
                Err(reply.lines.join("\n"))
            }
        }
    }

    #[test]
    fn rcpt_time_routes_twins_and_accepts_everyone() {
        let stage = stage(TlsVersion::Tls1_2);
        let cases = [
            ("user@secure.example.org", "user@example.org"),
            ("User+tag@Secure.Example.org", "User+tag@example.org"),
            ("boss@VAULT.example.net", "boss@vault.example.net"),
            ("user@example.org", "user@example.org"),
            ("postmaster", "postmaster"),
        ];
        for (address, mailbox) in cases {
            let mut rcpt = Recipient::new(address.into());
            assert!(stage.check_recipient(&envelope(), &mut rcpt).is_ok());
            assert_eq!(rcpt.mailbox, mailbox, "{address}");
            assert_eq!(rcpt.address, address);
        }
    }

    #[test]
    fn verdicts_per_recipient() {
        let tls12 = format!("{TLS12}{REST}");
        let plain = format!("{PLAIN}{REST}");
        let twin = Ok("original-to:user@secure.example.org".to_string());
        let refused_plain = Err("<user@secure.example.org>: TLS required for this address; \
             no TLS evidence from a trusted MTA"
            .to_string());
        let refused_old = Err("<user@secure.example.org>: TLS required for this address; \
             received with TLSv1.2, at least TLSv1.3 required"
            .to_string());
        let cases = [
            (
                TlsVersion::Tls1_2,
                &tls12,
                "user@secure.example.org",
                twin.clone(),
            ),
            (
                TlsVersion::Tls1_2,
                &plain,
                "user@secure.example.org",
                refused_plain,
            ),
            (
                TlsVersion::Tls1_3,
                &tls12,
                "user@secure.example.org",
                refused_old,
            ),
            (
                TlsVersion::Tls1_2,
                &plain,
                "user@example.org",
                Ok(String::new()),
            ),
            (
                TlsVersion::Tls1_3,
                &plain,
                "user@example.org",
                Ok(String::new()),
            ),
            // A bare secure domain: checked, but stored where it was sent (no header).
            (
                TlsVersion::Tls1_2,
                &tls12,
                "boss@VAULT.example.net",
                Ok(String::new()),
            ),
            (
                TlsVersion::Tls1_2,
                &plain,
                "boss@vault.example.net",
                Err("<boss@vault.example.net>: TLS required for this address; \
                 no TLS evidence from a trusted MTA"
                    .to_string()),
            ),
        ];
        for (min, headers, address, expected) in cases {
            assert_eq!(
                run(&stage(min), headers, address),
                expected,
                "{address} {min}"
            );
        }
    }

    #[test]
    fn only_the_secure_recipients_of_a_plaintext_message_are_refused() {
        let pipeline = Pipeline::new(vec![Box::new(stage(TlsVersion::Tls1_2))]);
        let envelope = envelope();
        let headers = format!("{PLAIN}{REST}");
        let outcomes: Vec<bool> = [
            "a@secure.example.org",
            "b@example.org",
            "c@vault.example.net",
        ]
        .into_iter()
        .map(|address| {
            let mut rcpt = Recipient::new(address.into());
            pipeline.check_recipient(&envelope, &mut rcpt).unwrap();
            pipeline.plan(&envelope, headers.as_bytes(), &rcpt).is_ok()
        })
        .collect();
        assert_eq!(outcomes, [false, true, false]);
    }

    #[test]
    fn twin_copy_gets_one_header_line_on_top() {
        let pipeline = Pipeline::new(vec![Box::new(stage(TlsVersion::Tls1_2))]);
        let envelope = envelope();
        let headers = format!("{TLS12}{REST}");
        let mut rcpt = Recipient::new("User+tag@Secure.example.org".into());
        pipeline.check_recipient(&envelope, &mut rcpt).unwrap();
        let mut chain = pipeline.plan(&envelope, headers.as_bytes(), &rcpt).unwrap();
        assert_eq!(chain.variant(), "original-to:User+tag@Secure.example.org");
        let out = chain.headers(headers.as_bytes()).unwrap().to_vec();
        assert_eq!(
            out,
            format!("X-Original-To: User+tag@Secure.example.org\r\n{headers}").as_bytes()
        );
        assert_eq!(chain.body(b"body\r\n.x\r\n").unwrap(), b"body\r\n.x\r\n");
        assert_eq!(chain.finish().unwrap(), b"");

        // The real address itself, or anyone else, shares the unchanged copy.
        let mut other = Recipient::new("user@example.org".into());
        pipeline.check_recipient(&envelope, &mut other).unwrap();
        let chain = pipeline
            .plan(&envelope, headers.as_bytes(), &other)
            .unwrap();
        assert!(chain.is_empty());
    }

    /// The same verdict for the same session, whether its TLS evidence comes as Postfix's
    /// macros in the envelope (the milter, at RCPT) or as our MTA's Received field (LMTP, at
    /// header time).
    #[test]
    fn same_verdicts_from_macros_at_rcpt_as_from_received_at_header_time() {
        let received = |with: &str, tls: &str| {
            format!(
                "Received: from client.example.net (unknown [192.0.2.1])\r\n{tls}\
                 \tby mx.test.example (Postfix) with {with} id 79C45C8770;\r\n\
                 \tSun, 22 Nov 2026 12:41:13 +0000 (UTC)\r\n{REST}"
            )
        };
        let using = |version: &str, cipher: &str| {
            format!("\t(using {version} with cipher {cipher} (256/256 bits))\r\n")
        };
        let cases: Vec<(String, Option<&str>, Option<&str>)> = vec![
            (
                received("ESMTPS", &using("TLSv1.3", "TLS_AES_256_GCM_SHA384")),
                Some("TLSv1.3"),
                Some("TLS_AES_256_GCM_SHA384"),
            ),
            (
                received("ESMTPS", &using("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384")),
                Some("TLSv1.2"),
                Some("ECDHE-RSA-AES256-GCM-SHA384"),
            ),
            (
                received("ESMTPS", &using("TLSv1.1", "ECDHE-RSA-AES256-SHA")),
                Some("TLSv1.1"),
                Some("ECDHE-RSA-AES256-SHA"),
            ),
            (
                received("ESMTPS", &using("TLSv1", "AES256-SHA")),
                Some("TLSv1"),
                Some("AES256-SHA"),
            ),
            (received("ESMTP", ""), None, None),
            (REST.to_string(), None, None),
        ];
        let verdict = |result: Result<(), Reply>| {
            result.map_err(|reply| (reply.code, reply.enhanced, reply.lines.join("\n")))
        };
        let mut refused = 0;
        for min in [TlsVersion::Tls1_0, TlsVersion::Tls1_2, TlsVersion::Tls1_3] {
            let stage = stage(min);
            for (headers, version, cipher) in &cases {
                for address in [
                    "user@secure.example.org",
                    "boss@vault.example.net",
                    "other@example.org",
                ] {
                    // LMTP: RCPT checks, then the plan once the header block is in.
                    let envelope = Envelope::default();
                    let mut lmtp_rcpt = Recipient::new(address.to_string());
                    stage.check_recipient(&envelope, &mut lmtp_rcpt).unwrap();
                    let lmtp = stage
                        .plan(&envelope, headers.as_bytes(), &lmtp_rcpt)
                        .map(drop);
                    // Milter: the same session as macros, decided at RCPT.
                    let envelope = Envelope {
                        tls: Some(TlsEvidence::from_macros(*version, *cipher)),
                        ..Envelope::default()
                    };
                    let mut milter_rcpt = Recipient::new(address.to_string());
                    let milter = stage.check_recipient(&envelope, &mut milter_rcpt);
                    let what = format!("{min} {address} {version:?}\n{headers}");
                    if milter.is_ok() {
                        assert_eq!(milter_rcpt.mailbox, lmtp_rcpt.mailbox, "{what}");
                    } else {
                        refused += 1;
                    }
                    assert_eq!(verdict(milter), verdict(lmtp), "{what}");
                }
            }
        }
        // For each of the two secure addresses: the two plaintext cases at every minimum, TLSv1.1
        // and TLSv1 below TLSv1.2, and those and TLSv1.2 below TLSv1.3.
        assert_eq!(refused, 2 * (3 * 2 + 2 + 3));
    }

    /// A refusal by this stage counts as missing TLS, at RCPT and at header time.
    #[test]
    fn refusals_are_for_tls() {
        let pipeline = Pipeline::new(vec![Box::new(stage(TlsVersion::Tls1_2))]);
        let plaintext = Envelope {
            tls: Some(TlsEvidence::Plaintext),
            ..Envelope::default()
        };
        let mut rcpt = Recipient::new("user@secure.example.org".into());
        let refusal = pipeline.check_recipient(&plaintext, &mut rcpt).unwrap_err();
        assert_eq!(refusal.reason, RefusalReason::NoTls);
        let headers = format!("{PLAIN}{REST}");
        let mut rcpt = Recipient::new("user@secure.example.org".into());
        pipeline.check_recipient(&envelope(), &mut rcpt).unwrap();
        let refusal = pipeline
            .plan(&envelope(), headers.as_bytes(), &rcpt)
            .err()
            .unwrap();
        assert_eq!(refusal.reason, RefusalReason::NoTls);
    }

    /// A store that cannot tell about any address (a key database away too long).
    struct CannotTell;

    impl SecureLookup for CannotTell {
        fn tls_rule(&self, _address: &str) -> TlsRule {
            TlsRule::Unknown {
                reason: "the key database has been unreachable too long".into(),
            }
        }
    }

    /// The usual stage with a second lookup that cannot tell.
    fn stage_with_doubt() -> RequireTlsStage {
        let mut stage = stage(TlsVersion::Tls1_2);
        stage.secure.push(Arc::new(CannotTell));
        stage
    }

    #[test]
    fn an_unknown_rule_tempfails_without_tls_and_accepts_with_it() {
        let stage = stage_with_doubt();
        let envelope = envelope();
        // After the queue: RCPT accepts (TLS shows only in the header block), then the
        // verdict at header time.
        let mut rcpt = Recipient::new("nina@example.org".into());
        stage.check_recipient(&envelope, &mut rcpt).unwrap();
        assert_eq!(rcpt.mailbox, "nina@example.org");
        let reply = match stage.plan(&envelope, format!("{PLAIN}{REST}").as_bytes(), &rcpt) {
            Err(reply) => reply,
            Ok(_) => panic!("a plaintext message to an unknown rule passed"),
        };
        assert_eq!(reply.code, 451);
        assert_eq!(reply.enhanced, Some(EnhancedCode::new(4, 7, 0)));
        let text = reply.lines.join(" ");
        assert!(
            text.contains("cannot tell whether this address requires TLS"),
            "{text}"
        );
        assert!(text.contains("unreachable too long"), "{text}");
        assert!(matches!(
            stage.plan(&envelope, format!("{TLS12}{REST}").as_bytes(), &rcpt),
            Ok(Plan::Unchanged)
        ));
        // Before the queue: the macros decide at RCPT.
        for (tls, code) in [
            (TlsEvidence::Plaintext, Some(451)),
            (
                TlsEvidence::from_macros(Some("TLSv1.3"), Some("TLS_AES_256_GCM_SHA384")),
                None,
            ),
        ] {
            let envelope = Envelope {
                tls: Some(tls),
                ..Envelope::default()
            };
            let mut rcpt = Recipient::new("nina@example.org".into());
            let got = stage
                .check_recipient(&envelope, &mut rcpt)
                .err()
                .map(|r| r.code);
            assert_eq!(got, code);
        }
    }

    #[test]
    fn a_required_rule_outweighs_an_unknown_one() {
        let stage = stage_with_doubt();
        let got = run(&stage, &format!("{PLAIN}{REST}"), "user@secure.example.org");
        assert!(got.is_err(), "{got:?}");
        let got = run(&stage, &format!("{TLS12}{REST}"), "user@secure.example.org");
        assert_eq!(got, Ok("original-to:user@secure.example.org".to_string()));
    }
}
