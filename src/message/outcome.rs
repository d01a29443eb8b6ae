//! What became of a recipient: why a stage refused it.

/// Why a stage refused a recipient: what the refusal counts as in metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// A secure (TLS-only) address, and the message came without (enough) TLS.
    NoTls,
    /// Any other refusal (an unusable or unknown key, ...): it counts by its reply code.
    Other,
}
