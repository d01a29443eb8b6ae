//! Binary-only code: the `sealgate keys` commands and the systemd integration.

pub(crate) mod keys;
pub(crate) mod systemd;
