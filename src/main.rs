//! The `sealgate` command: turns argv into one call (serve, check the configuration, manage
//! keys) and an exit code. The work is in `cli/`.

use std::process::ExitCode;

use sealgate::config::VARIABLES;

/// jemalloc instead of glibc's malloc: sequoia reserves two 4 MiB buffers per message
/// (one per partial-body writer), and glibc hands such blocks back to the kernel and faults
/// them in again message after message; measured 9 % more small messages per CPU-second.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod cli;
use cli::Exit;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["run"] => cli::run::run(),
        ["check-config"] => cli::run::check_config(),
        ["keys", rest @ ..] => {
            quiet_on_broken_pipe();
            cli::keys::main(rest)
        }
        ["--help" | "-h" | "help"] => {
            print!("{}", help());
            ExitCode::SUCCESS
        }
        ["--version" | "-V"] => {
            println!(
                "sealgate {}\ncommit: {}\nrustc: {}\ncrypto backend: {}",
                env!("CARGO_PKG_VERSION"),
                sealgate::BUILD_COMMIT,
                sealgate::BUILD_RUSTC,
                sealgate::CRYPTO_BACKEND
            );
            ExitCode::SUCCESS
        }
        _ => {
            // A short message: the variable list is for --help, not for a typo.
            eprintln!(
                "sealgate: unknown arguments {args:?}\n\
                 usage: sealgate [run | check-config | keys ... | --help | --version]\n\
                 try `sealgate --help`"
            );
            ExitCode::from(Exit::Usage)
        }
    }
}

/// `sealgate keys list | head`: once the reader is gone, end quietly with the status a
/// program killed by SIGPIPE has (128 + 13), instead of a panic message. Rust ignores SIGPIPE,
/// so `println!` panics on EPIPE; this hook turns exactly that panic into the quiet exit.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("Broken pipe") {
            #[allow(
                clippy::disallowed_methods,
                reason = "inside a panic hook there is no way back to main's ExitCode"
            )]
            std::process::exit(128 + 13);
        }
        default(info);
    }));
}

fn help() -> String {
    let mut text = String::from(
        "sealgate: inbound-mail privacy filter for Postfix and Dovecot\n\n\
         Usage:\n  sealgate [run]        serve LMTP and/or the milter until SIGTERM/SIGINT\n  \
         sealgate check-config print the effective configuration, or the error (the checks\n                        \
         `run` makes before binding; exit 78 on a bad setting)\n  \
         sealgate keys ...     manage the key store (`sealgate keys --help`)\n  \
         sealgate --version\n\nEnvironment (default in brackets):\n",
    );
    for v in VARIABLES {
        text.push_str(&format!("  {} [{}]\n      {}\n", v.name, v.default, v.doc));
    }
    text
}
