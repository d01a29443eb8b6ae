//! Milter wire constants under their libmilter (`mfdef.h`, `mfapi.h`) names.
//!
//! Values are the ones Postfix's `src/milter/milter8.c` uses for protocol version 6.

/// The milter protocol version this codec speaks (Sendmail 8.14, Postfix `milter_protocol = 6`).
pub const SMFI_VERSION: u32 = 6;

/// Largest body chunk Postfix puts in one `B` packet (and the size [`super::Response::ReplaceBody`]
/// is split into).
pub const MILTER_CHUNK_SIZE: usize = 65535;

// --- Commands, MTA → milter (`SMFIC_*`) ---

/// `A`: abort the current message; the connection stays.
pub const SMFIC_ABORT: u8 = b'A';
/// `B`: one chunk of the message body.
pub const SMFIC_BODY: u8 = b'B';
/// `C`: connection information.
pub const SMFIC_CONNECT: u8 = b'C';
/// `D`: macro definitions for the command that follows.
pub const SMFIC_MACRO: u8 = b'D';
/// `E`: end of the message body (Postfix sends it empty).
pub const SMFIC_BODYEOB: u8 = b'E';
/// `H`: HELO/EHLO name.
pub const SMFIC_HELO: u8 = b'H';
/// `K`: quit, but a new connection follows on the same socket (never sent by Postfix).
pub const SMFIC_QUIT_NC: u8 = b'K';
/// `L`: one message header.
pub const SMFIC_HEADER: u8 = b'L';
/// `M`: MAIL FROM arguments.
pub const SMFIC_MAIL: u8 = b'M';
/// `N`: end of the message headers.
pub const SMFIC_EOH: u8 = b'N';
/// `O`: option negotiation; the milter's answer uses the same byte.
pub const SMFIC_OPTNEG: u8 = b'O';
/// `Q`: quit; the MTA closes the connection.
pub const SMFIC_QUIT: u8 = b'Q';
/// `R`: RCPT TO arguments.
pub const SMFIC_RCPT: u8 = b'R';
/// `T`: the DATA command.
pub const SMFIC_DATA: u8 = b'T';
/// `U`: an SMTP command the MTA did not recognise.
pub const SMFIC_UNKNOWN: u8 = b'U';

// --- Responses, milter → MTA (`SMFIR_*`) ---

/// `+`: add a recipient (end of message only).
pub const SMFIR_ADDRCPT: u8 = b'+';
/// `-`: delete a recipient (end of message only).
pub const SMFIR_DELRCPT: u8 = b'-';
/// `2`: add a recipient with ESMTP arguments (end of message only).
pub const SMFIR_ADDRCPT_PAR: u8 = b'2';
/// `4`: shut the SMTP connection down (Postfix answers 421).
pub const SMFIR_SHUTDOWN: u8 = b'4';
/// `a`: accept (the connection at CONNECT/HELO, else the message).
pub const SMFIR_ACCEPT: u8 = b'a';
/// `b`: replacement body chunk (end of message only).
pub const SMFIR_REPLBODY: u8 = b'b';
/// `c`: continue.
pub const SMFIR_CONTINUE: u8 = b'c';
/// `d`: accept and silently discard the message.
pub const SMFIR_DISCARD: u8 = b'd';
/// `e`: change the envelope sender (end of message only).
pub const SMFIR_CHGFROM: u8 = b'e';
/// `f`: connection failure (not a valid reply to Postfix).
pub const SMFIR_CONN_FAIL: u8 = b'f';
/// `h`: append a header (end of message only).
pub const SMFIR_ADDHEADER: u8 = b'h';
/// `i`: insert a header at an index (end of message only).
pub const SMFIR_INSHEADER: u8 = b'i';
/// `l`: set the macro list (sent inside OPTNEG instead; not a valid reply to Postfix).
pub const SMFIR_SETSYMLIST: u8 = b'l';
/// `m`: change or delete a header (end of message only).
pub const SMFIR_CHGHEADER: u8 = b'm';
/// `p`: still working; restarts the MTA's timer.
pub const SMFIR_PROGRESS: u8 = b'p';
/// `q`: quarantine the message, with a reason.
pub const SMFIR_QUARANTINE: u8 = b'q';
/// `r`: reject (Postfix: `550 5.7.1 Command rejected`).
pub const SMFIR_REJECT: u8 = b'r';
/// `s`: skip further events of this type.
pub const SMFIR_SKIP: u8 = b's';
/// `t`: temporary failure (Postfix: `451 4.7.1 Service unavailable - try again later`).
pub const SMFIR_TEMPFAIL: u8 = b't';
/// `y`: reply with an explicit SMTP code and text.
pub const SMFIR_REPLYCODE: u8 = b'y';

// --- Actions the milter may take (`SMFIF_*`, OPTNEG `actions`) ---

/// No actions.
pub const SMFIF_NONE: u32 = 0x0;
/// May add headers.
pub const SMFIF_ADDHDRS: u32 = 0x1;
/// May replace the body.
pub const SMFIF_CHGBODY: u32 = 0x2;
/// May add recipients.
pub const SMFIF_ADDRCPT: u32 = 0x4;
/// May delete recipients.
pub const SMFIF_DELRCPT: u32 = 0x8;
/// May change or delete headers.
pub const SMFIF_CHGHDRS: u32 = 0x10;
/// May quarantine the message.
pub const SMFIF_QUARANTINE: u32 = 0x20;
/// May change the envelope sender.
pub const SMFIF_CHGFROM: u32 = 0x40;
/// May add recipients with ESMTP arguments.
pub const SMFIF_ADDRCPT_PAR: u32 = 0x80;
/// May send macro lists in its OPTNEG reply.
pub const SMFIF_SETSYMLIST: u32 = 0x100;
/// Every version 6 action; what Postfix offers (`0x1FF`).
pub const SMFI_V6_ACTS: u32 = 0x1FF;

// --- Protocol flags (`SMFIP_*`, OPTNEG `protocol`) ---

/// No protocol flags.
pub const SMFIP_NONE: u32 = 0x0;
/// Don't send CONNECT.
pub const SMFIP_NOCONNECT: u32 = 0x1;
/// Don't send HELO.
pub const SMFIP_NOHELO: u32 = 0x2;
/// Don't send MAIL.
pub const SMFIP_NOMAIL: u32 = 0x4;
/// Don't send RCPT.
pub const SMFIP_NORCPT: u32 = 0x8;
/// Don't send the body.
pub const SMFIP_NOBODY: u32 = 0x10;
/// Don't send headers.
pub const SMFIP_NOHDRS: u32 = 0x20;
/// Don't send end of headers.
pub const SMFIP_NOEOH: u32 = 0x40;
/// No reply to HEADER.
pub const SMFIP_NR_HDR: u32 = 0x80;
/// Old name of [`SMFIP_NR_HDR`].
pub const SMFIP_NOHREPL: u32 = SMFIP_NR_HDR;
/// Don't send unknown commands.
pub const SMFIP_NOUNKNOWN: u32 = 0x100;
/// Don't send DATA.
pub const SMFIP_NODATA: u32 = 0x200;
/// The MTA understands SKIP.
pub const SMFIP_SKIP: u32 = 0x400;
/// Also send rejected recipients.
pub const SMFIP_RCPT_REJ: u32 = 0x800;
/// No reply to CONNECT.
pub const SMFIP_NR_CONN: u32 = 0x1000;
/// No reply to HELO.
pub const SMFIP_NR_HELO: u32 = 0x2000;
/// No reply to MAIL.
pub const SMFIP_NR_MAIL: u32 = 0x4000;
/// No reply to RCPT.
pub const SMFIP_NR_RCPT: u32 = 0x8000;
/// No reply to DATA.
pub const SMFIP_NR_DATA: u32 = 0x10000;
/// No reply to unknown commands.
pub const SMFIP_NR_UNKN: u32 = 0x20000;
/// No reply to end of headers.
pub const SMFIP_NR_EOH: u32 = 0x40000;
/// No reply to body chunks.
pub const SMFIP_NR_BODY: u32 = 0x80000;
/// Header values keep their leading space.
pub const SMFIP_HDR_LEADSPC: u32 = 0x100000;
/// Every "don't send" flag.
pub const SMFIP_NOSEND_MASK: u32 = SMFIP_NOCONNECT
    | SMFIP_NOHELO
    | SMFIP_NOMAIL
    | SMFIP_NORCPT
    | SMFIP_NOBODY
    | SMFIP_NOHDRS
    | SMFIP_NOEOH
    | SMFIP_NOUNKNOWN
    | SMFIP_NODATA;
/// Every "no reply" flag.
pub const SMFIP_NOREPLY_MASK: u32 = SMFIP_NR_HDR
    | SMFIP_NR_CONN
    | SMFIP_NR_HELO
    | SMFIP_NR_MAIL
    | SMFIP_NR_RCPT
    | SMFIP_NR_DATA
    | SMFIP_NR_UNKN
    | SMFIP_NR_EOH
    | SMFIP_NR_BODY;

// --- Address families in CONNECT (`SMFIA_*`) ---

/// Unknown family: no port or address follows.
pub const SMFIA_UNKNOWN: u8 = b'U';
/// Unix-domain socket.
pub const SMFIA_UNIX: u8 = b'L';
/// IPv4.
pub const SMFIA_INET: u8 = b'4';
/// IPv6.
pub const SMFIA_INET6: u8 = b'6';

// --- Macro stages in the OPTNEG reply (`SMFIM_*`) ---

/// Macros sent with CONNECT.
pub const SMFIM_CONNECT: u32 = 0;
/// Macros sent with HELO.
pub const SMFIM_HELO: u32 = 1;
/// Macros sent with MAIL.
pub const SMFIM_ENVFROM: u32 = 2;
/// Macros sent with RCPT.
pub const SMFIM_ENVRCPT: u32 = 3;
/// Macros sent with DATA.
pub const SMFIM_DATA: u32 = 4;
/// Macros sent with end of message.
pub const SMFIM_EOM: u32 = 5;
/// Macros sent with end of headers.
pub const SMFIM_EOH: u32 = 6;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_match_postfix() {
        // Postfix's v6 event mask (milter8.c MILTER8_V6_PROTO_MASK) is every flag up to HDR_LEADSPC.
        assert_eq!(
            SMFIP_NOSEND_MASK
                | SMFIP_NOREPLY_MASK
                | SMFIP_SKIP
                | SMFIP_RCPT_REJ
                | SMFIP_HDR_LEADSPC,
            0x1F_FFFF
        );
        assert_eq!(
            SMFIF_ADDHDRS
                | SMFIF_CHGBODY
                | SMFIF_ADDRCPT
                | SMFIF_DELRCPT
                | SMFIF_CHGHDRS
                | SMFIF_QUARANTINE
                | SMFIF_CHGFROM
                | SMFIF_ADDRCPT_PAR
                | SMFIF_SETSYMLIST,
            SMFI_V6_ACTS
        );
    }
}
