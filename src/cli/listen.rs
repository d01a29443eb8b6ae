//! The listeners (LMTP, milter, HTTP), each bound or taken over from systemd (socket
//! activation) through one path.

use std::io;

use sealgate::Listeners;
use sealgate::config::Config;
use sealgate::net::{Address, Listener};
use tracing::info;

use super::systemd::{self, Inherited, Role};

/// The listeners the configuration asks for, in the order of [`Listeners`]' fields.
pub(crate) struct Plan {
    wanted: [Wanted; 3],
}

/// One listener the configuration may ask for.
struct Wanted {
    /// The systemd descriptor name that selects it, and the `protocol` of its log lines.
    name: &'static str,
    /// The variable that configures it, for messages.
    variable: &'static str,
    /// `None`: off.
    address: Option<Address>,
    /// The mode of a new unix socket (TCP ignores it).
    mode: u32,
}

/// A listener could not be bound or taken over.
pub(crate) struct CannotListen {
    /// The configured address.
    pub(crate) address: String,
    /// Why.
    pub(crate) err: io::Error,
}

impl Plan {
    /// The listeners of `config`.
    pub(crate) fn new(config: &Config) -> Plan {
        Plan {
            wanted: [
                Wanted {
                    name: "lmtp",
                    variable: "SEALGATE_LMTP_LISTEN",
                    address: config.lmtp_listen.clone(),
                    mode: config.lmtp_socket_mode,
                },
                Wanted {
                    name: "milter",
                    variable: "SEALGATE_MILTER_LISTEN",
                    address: config.milter_listen.clone(),
                    mode: config.milter_socket_mode,
                },
                Wanted {
                    name: "metrics",
                    variable: "SEALGATE_METRICS_LISTEN",
                    address: config.metrics_listen.clone().map(Address::Tcp),
                    mode: 0o660,
                },
            ],
        }
    }

    /// The sockets systemd passed, one entry per listener (see [`systemd::take_listeners`]).
    ///
    /// # Errors
    /// They do not match the configuration: a message for the operator.
    pub(crate) fn inherited(&self) -> Result<[Option<Inherited>; 3], String> {
        let roles = self.wanted.each_ref().map(|wanted| Role {
            name: wanted.name,
            variable: wanted.variable,
            address: wanted.address.as_ref(),
        });
        let inherited = systemd::take_listeners(&roles)?;
        <[_; 3]>::try_from(inherited)
            .map_err(|_| "systemd: not one socket entry per listener".to_string())
    }

    /// Binds each listener that is on, or takes over the one systemd passed for it.
    ///
    /// # Errors
    /// The first listener that could not be had.
    pub(crate) async fn listen(
        &self,
        mut inherited: [Option<Inherited>; 3],
    ) -> Result<Listeners, CannotListen> {
        let mut bound = [None, None, None];
        // HTTP first, as before the three shared this path.
        for i in [2, 0, 1] {
            let wanted = &self.wanted[i];
            let Some(address) = &wanted.address else {
                continue;
            };
            let listener = match inherited[i].take() {
                Some(socket) => {
                    info!(protocol = wanted.name, %address, "listener from systemd");
                    match socket {
                        Inherited::Tcp(l) => Listener::inherited_tcp(l),
                        Inherited::Unix(l) => Listener::inherited_unix(l),
                    }
                }
                None => Listener::bind(address, wanted.mode).await,
            };
            bound[i] = Some(listener.map_err(|err| CannotListen {
                address: address.to_string(),
                err,
            })?);
        }
        let [lmtp, milter, http] = bound;
        Ok(Listeners { lmtp, milter, http })
    }
}
