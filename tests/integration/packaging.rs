//! The files under `packaging/` stay in line with the code and pass their tools' checks:
//! - `sealgate.env` and the man page's ENVIRONMENT section list exactly `config::VARIABLES`
//!   (both are generated: `UPDATE_PACKAGING=1 cargo test --test integration packaging::`
//!   rewrites them, keeping the env file's uncommented settings and everything outside the
//!   generated parts);
//! - the env file's settings pass `sealgate check-config`, read as systemd and as sh read them;
//! - the man page renders with groff without warnings;
//! - `systemd-analyze verify` accepts the units, `systemd-analyze security` rates the service;
//! - `promtool` accepts the alerting rules and their unit tests pass; the Grafana dashboard is
//!   valid JSON whose queries are valid PromQL over metrics sealgate defines;
//! - `postconf` knows every parameter in the Postfix snippets;
//! - the Debian maintainer scripts are valid sh.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sealgate::config::{VARIABLES, Variable};

/// The line after which `sealgate.env` is generated.
const ENV_MARKER: &str =
    "# ---- Every variable, in `sealgate --help` order (tests/integration/packaging.rs) ----";

/// The man page's generated part: from the line starting with this ...
const MAN_BEGIN: &str = ".\\\" BEGIN GENERATED ENVIRONMENT";
/// ... up to this line.
const MAN_END: &str = ".\\\" END GENERATED ENVIRONMENT";

/// Comment lines are wrapped to this width.
const WIDTH: usize = 100;

fn packaging(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging")
        .join(path)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Fails unless `actual` is `expected`; with `UPDATE_PACKAGING=1`, writes `expected` to
/// `path` instead. Returns the file's text from then on.
fn check_generated(path: &Path, actual: &str, expected: &str) -> String {
    if actual == expected {
        return expected.to_string();
    }
    if std::env::var("UPDATE_PACKAGING").is_ok_and(|v| v == "1") {
        fs::write(path, expected).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        return expected.to_string();
    }
    let line = actual
        .lines()
        .zip(expected.lines())
        .position(|(a, e)| a != e)
        .unwrap_or_else(|| actual.lines().count().min(expected.lines().count()));
    panic!(
        "{} is out of date with config::VARIABLES (first difference at line {}: {:?} should be \
         {:?}); regenerate it with `UPDATE_PACKAGING=1 cargo test --test integration \
         packaging::` and review the diff",
        path.display(),
        line + 1,
        actual.lines().nth(line).unwrap_or("<end>"),
        expected.lines().nth(line).unwrap_or("<end>"),
    );
}

/// Greedy word wrap of `text` into lines of at most `width` characters (a longer word gets a
/// line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

// ---- sealgate.env ----

/// The uncommented `NAME=value` lines of an env file, in order.
fn env_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("sealgate.env: not NAME=value: {l:?}"));
            (name.to_string(), value.to_string())
        })
        .collect()
}

/// The env file as it should be: its own header (everything up to the marker), then per
/// variable its doc, its default commented out and its setting, if the file has one.
fn expected_env(actual: &str) -> String {
    let header = actual
        .split_once(ENV_MARKER)
        .map(|(header, _)| header)
        .unwrap_or_else(|| panic!("sealgate.env: marker line {ENV_MARKER:?} missing"));
    let settings: BTreeMap<String, String> = env_settings(actual).into_iter().collect();
    for name in settings.keys() {
        assert!(
            VARIABLES.iter().any(|v| v.name == name),
            "sealgate.env sets {name}, which is not in config::VARIABLES"
        );
    }
    let mut out = format!("{header}{ENV_MARKER}\n");
    for v in VARIABLES {
        out.push('\n');
        for line in wrap(v.doc, WIDTH - 2) {
            out.push_str(&format!("# {line}\n"));
        }
        out.push_str(&format!("# {}={}\n", v.name, v.default));
        if let Some(value) = settings.get(v.name) {
            out.push_str(&format!("{}={value}\n", v.name));
        }
    }
    out
}

#[test]
fn env_file_lists_every_variable_with_default_and_doc() {
    let path = packaging("sealgate.env");
    let actual = read(&path);
    let actual = check_generated(&path, &actual, &expected_env(&actual));
    // The other direction, spelled out: every `# NAME=` line is a known variable.
    let commented: Vec<&str> = actual
        .lines()
        .filter_map(|l| l.strip_prefix("# SEALGATE_"))
        .filter_map(|l| l.split_once('=').map(|(name, _)| name))
        .collect();
    let names: Vec<String> = VARIABLES
        .iter()
        .map(|v| v.name["SEALGATE_".len()..].to_string())
        .collect();
    assert_eq!(commented, names, "the `# SEALGATE_X=default` lines");
}

/// The settings the Debian package ships where they differ from the defaults.
#[test]
fn env_file_has_the_debian_paths() {
    let settings: BTreeMap<String, String> = env_settings(&read(&packaging("sealgate.env")))
        .into_iter()
        .collect();
    let expect = [
        (
            "SEALGATE_LMTP_LISTEN",
            "unix:/var/spool/postfix/private/sealgate-lmtp",
        ),
        ("SEALGATE_NEXT_HOP", "lmtp:unix:/var/run/dovecot/lmtp"),
        ("SEALGATE_KEYSTORE", "/var/lib/sealgate/keys"),
    ];
    for (name, value) in expect {
        assert_eq!(
            settings.get(name).map(String::as_str),
            Some(value),
            "{name}"
        );
    }
    // sealgate.socket creates the same LMTP socket (sealgate refuses to start otherwise).
    let socket = read(&packaging("sealgate.socket"));
    assert!(
        socket.contains("\nListenStream=/var/spool/postfix/private/sealgate-lmtp\n"),
        "sealgate.socket and SEALGATE_LMTP_LISTEN differ"
    );
}

/// check-config also checks the key store: on a test machine the package's store
/// (/var/lib/sealgate/keys) does not exist, which it must report (exit 75), and that alone.
fn only_the_store_is_missing(output: &str) -> bool {
    let complaints: Vec<&str> = output
        .lines()
        .filter(|l| l.starts_with("sealgate:"))
        .collect();
    !complaints.is_empty()
        && complaints.iter().all(|l| {
            l.starts_with("sealgate: key store degraded: /var/lib/sealgate/keys")
                && !Path::new("/var/lib/sealgate/keys").exists()
        })
}

/// `sealgate check-config` prints `NAME=value` for each setting of the env file.
fn assert_check_config_takes(output: &str, settings: &[(String, String)]) {
    for (name, value) in settings {
        assert!(
            output.lines().any(|l| l == format!("{name}={value}")),
            "check-config does not show {name}={value}:\n{output}"
        );
    }
}

#[test]
fn env_file_settings_pass_check_config() {
    let path = packaging("sealgate.env");
    let settings = env_settings(&read(&path));
    assert!(!settings.is_empty());
    let bin = env!("CARGO_BIN_EXE_sealgate");
    let path_var = std::env::var_os("PATH").unwrap_or_default();

    // As systemd's EnvironmentFile= reads it: the NAME=value lines, nothing else. The paths
    // need not exist: check-config reads no file and binds nothing.
    let (ok, output) = testkit::run(
        Command::new(bin)
            .arg("check-config")
            .env_clear()
            .env("PATH", &path_var)
            .envs(settings.iter().map(|(k, v)| (k, v))),
    );
    assert!(
        ok || only_the_store_is_missing(&output),
        "check-config refused the env file's settings:\n{output}"
    );
    assert_check_config_takes(&output, &settings);

    // As an admin checks it by hand (README, sealgate(8)): sourced by sh.
    let (ok, output) = testkit::run(
        Command::new("sh")
            .args([
                "-c",
                "set -a; . \"$1\"; set +a; exec \"$2\" check-config",
                "sh",
            ])
            .arg(&path)
            .arg(bin)
            .env_clear()
            .env("PATH", &path_var),
    );
    assert!(
        ok || only_the_store_is_missing(&output),
        "check-config refused the sourced env file:\n{output}"
    );
    assert_check_config_takes(&output, &settings);
}

// ---- the man page ----

/// Text for roff: backslashes and hyphens escaped, `code` in bold, and nothing that a line
/// start would take for a request.
fn roff(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        let escaped = part.replace('\\', "\\e").replace('-', "\\-");
        if i % 2 == 1 {
            out.push_str(&format!("\\fB{escaped}\\fR"));
        } else {
            out.push_str(&escaped);
        }
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// One ENVIRONMENT entry: the name, the default (with break points after commas, so the long
/// list of scrubbed headers can wrap), the doc.
fn man_entry(v: &Variable) -> String {
    let default = roff(v.default).replace(',', ",\\:");
    let default = if v.default.starts_with('(') {
        default
    } else {
        format!("\\fB{default}\\fR")
    };
    format!(".TP\n.B {}\nDefault: {default}.\n{}\n", v.name, roff(v.doc))
}

fn expected_man(actual: &str) -> String {
    let mut out = String::new();
    let mut lines = actual.split_inclusive('\n').peekable();
    // Up to and including the BEGIN marker and its comment lines.
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("sealgate.8: no line starting with {MAN_BEGIN:?}"));
        out.push_str(line);
        if line.starts_with(MAN_BEGIN) {
            break;
        }
    }
    while let Some(line) = lines.next_if(|l| l.starts_with(".\\\"") && !l.starts_with(MAN_END)) {
        out.push_str(line);
    }
    for v in VARIABLES {
        out.push_str(&man_entry(v));
    }
    // Skip the old entries, keep the END marker and the rest.
    for line in lines.by_ref() {
        if line.starts_with(MAN_END) {
            out.push_str(line);
            break;
        }
    }
    assert!(out.contains(MAN_END), "sealgate.8: no {MAN_END:?} line");
    out.extend(lines);
    out
}

#[test]
fn man_page_documents_every_variable() {
    let path = packaging("sealgate.8");
    let actual = read(&path);
    let actual = check_generated(&path, &actual, &expected_man(&actual));
    for v in VARIABLES {
        assert!(actual.contains(&format!("\n.B {}\n", v.name)), "{}", v.name);
    }
}

#[test]
fn man_page_renders_without_warnings() {
    if !testkit::require("groff") {
        return;
    }
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(packaging("sealgate.8"))
        .output()
        .expect("run groff");
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && warnings.trim().is_empty(),
        "groff: {warnings}"
    );
    // And as man(1) formats it (with its own checks, as `man -l` would).
    if testkit::find_bin("man").is_some() {
        let out = Command::new("man")
            .args(["--warnings", "-l", "-Tutf8"])
            .arg(packaging("sealgate.8"))
            .env("MANWIDTH", "80")
            .output()
            .expect("run man");
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && warnings.trim().is_empty(),
            "man: {warnings}"
        );
    }
}

// ---- systemd ----

/// Copies of the unit files with the built binary in place of /usr/bin/sealgate, which
/// `systemd-analyze verify` wants to exist.
fn units_in(dir: &Path) -> Vec<PathBuf> {
    [
        "sealgate.service",
        "sealgate.socket",
        "debian/sealgate-milter.socket",
    ]
    .iter()
    .map(|name| {
        let text =
            read(&packaging(name)).replace("/usr/bin/sealgate", env!("CARGO_BIN_EXE_sealgate"));
        let path = dir.join(Path::new(name).file_name().expect("file name"));
        fs::write(&path, text).expect("write unit");
        path
    })
    .collect()
}

#[test]
fn systemd_analyze_verifies_the_units() {
    if !testkit::require("systemd-analyze") {
        return;
    }
    let dir = testkit::temp_dir("sealgate-units-");
    let units = units_in(dir.path());
    // Unknown keys and the like are only warnings (exit 0): any output fails the test. The
    // man page is checked installed, by scripts/test-deb.
    let (ok, output) = testkit::run(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .args(&units),
    );
    assert!(
        ok && output.trim().is_empty(),
        "systemd-analyze verify:\n{output}"
    );
}

#[test]
fn systemd_analyze_security_rates_the_service_ok() {
    if !testkit::require("systemd-analyze") {
        return;
    }
    let dir = testkit::temp_dir("sealgate-units-");
    let units = units_in(dir.path());
    // --offline works without a running systemd (v250+); --threshold is in tenths: fail
    // above 2.0 ("OK" ends at 4.9), so a weakened sandbox shows.
    let (ok, output) = testkit::run(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager", "--threshold=20"])
            .arg(&units[0]),
    );
    let level = output
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{output}"));
    testkit::figure(level.trim_start_matches(|c: char| !c.is_ascii_alphabetic()));
    assert!(ok, "exposure above 2.0:\n{output}");
}

// ---- Prometheus and Grafana ----

#[test]
fn alert_rules_pass_promtool() {
    if !testkit::require("promtool") {
        return;
    }
    let (ok, output) = testkit::run(
        Command::new("promtool")
            .args(["check", "rules"])
            .arg(packaging("prometheus/sealgate-alerts.yml")),
    );
    assert!(ok, "promtool check rules:\n{output}");
    let (ok, output) = testkit::run(
        Command::new("promtool")
            .args(["test", "rules", "sealgate-alerts.test.yml"])
            .current_dir(packaging("prometheus")),
    );
    assert!(ok, "promtool test rules:\n{output}");
}

/// Every `sealgate_*` metric name in `text`, without the histogram suffixes.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (i, _) in text.match_indices("sealgate_") {
        if text[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            continue;
        }
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).map(str::to_string))
            .unwrap_or(name);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The metric names sealgate registers: the string literals of src/ops/metrics.rs.
fn defined_metrics() -> Vec<String> {
    let source = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ops/metrics.rs"));
    let source = source.split("#[cfg(test)]").next().unwrap_or_default();
    source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.starts_with("sealgate_")
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn man_page_lists_every_metric() {
    let page = read(&packaging("sealgate.8"));
    let section = page
        .split_once("\n.SH METRICS\n")
        .and_then(|(_, rest)| rest.split_once("\n.SH "))
        .map(|(section, _)| section)
        .expect("sealgate.8: a METRICS section");
    let mut listed = metric_names(section);
    listed.sort();
    let mut defined = defined_metrics();
    defined.sort();
    assert_eq!(
        listed, defined,
        "sealgate.8's METRICS and src/ops/metrics.rs"
    );
}

#[test]
fn alerts_and_dashboard_use_only_defined_metrics() {
    let defined = defined_metrics();
    assert!(
        defined.len() >= 10,
        "src/ops/metrics.rs defines too few metrics: {defined:?}"
    );
    for file in ["prometheus/sealgate-alerts.yml", "grafana/sealgate.json"] {
        let used = metric_names(&read(&packaging(file)));
        assert!(!used.is_empty(), "{file} uses no metric");
        for name in used {
            assert!(
                defined.contains(&name),
                "{file} uses {name}, which src/ops/metrics.rs does not define ({defined:?})"
            );
        }
    }
}

/// The dashboard parses as JSON and every query is valid PromQL: python3 pulls the `expr`
/// fields out (with Grafana's variables replaced), promtool checks them as recording rules.
#[test]
fn grafana_dashboard_queries_are_valid_promql() {
    if !testkit::require_all(&["python3", "promtool"]) {
        return;
    }
    let dir = testkit::temp_dir("sealgate-grafana-");
    let rules = dir.path().join("dashboard-rules.yml");
    let script = r#"
import json, sys
dashboard = json.load(open(sys.argv[1]))
assert dashboard["uid"] == "sealgate" and dashboard["title"], "uid/title"
exprs = []
def walk(node):
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            exprs.append(node["expr"])
        for value in node.values():
            walk(value)
    elif isinstance(node, list):
        for value in node:
            walk(value)
walk(dashboard["panels"])
assert exprs, "no queries"
ids = [p["id"] for p in dashboard["panels"]]
assert len(ids) == len(set(ids)), "duplicate panel ids"
replace = {"$__rate_interval": "5m", "$__range": "1h", "$job": "sealgate", "$instance": ".*"}
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, expr in enumerate(exprs):
        for key, value in replace.items():
            expr = expr.replace(key, value)
        assert "$" not in expr, "unknown variable in " + expr
        out.write("      - record: dashboard:query%d\n        expr: %s\n" % (i, json.dumps(expr)))
print(len(exprs))
"#;
    let (ok, output) = testkit::run(
        Command::new("python3")
            .args(["-c", script])
            .arg(packaging("grafana/sealgate.json"))
            .arg(&rules),
    );
    assert!(ok, "the dashboard:\n{output}");
    let (ok, output) = testkit::run(
        Command::new("promtool")
            .args(["check", "rules"])
            .arg(&rules),
    );
    assert!(ok, "the dashboard's queries:\n{output}");
}

// ---- Postfix snippets and maintainer scripts ----

/// `postconf -n` warns about every parameter it does not know, in main.cf and in master.cf's
/// `-o` overrides: a typo in a snippet shows up here.
#[test]
fn postfix_snippets_use_only_known_parameters() {
    if !testkit::require("postconf") {
        return;
    }
    let snippets: Vec<PathBuf> = fs::read_dir(packaging("postfix"))
        .expect("packaging/postfix")
        .map(|e| e.expect("entry").path())
        .collect();
    let mains: Vec<&PathBuf> = snippets
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".main.cf"))
        .collect();
    assert!(mains.len() >= 4, "{snippets:?}");
    for main in mains {
        let master = PathBuf::from(main.to_string_lossy().replace(".main.cf", ".master.cf"));
        let dir = testkit::temp_dir("sealgate-postconf-");
        fs::copy(main, dir.path().join("main.cf")).expect("copy main.cf");
        if master.exists() {
            fs::copy(&master, dir.path().join("master.cf")).expect("copy master.cf");
        } else {
            fs::write(dir.path().join("master.cf"), "").expect("write master.cf");
        }
        for args in [["-n"], ["-M"]] {
            let out = Command::new(testkit::bin_path("postconf"))
                .arg("-c")
                .arg(dir.path())
                .args(args)
                .output()
                .expect("run postconf");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && stderr.trim().is_empty(),
                "postconf {args:?} on {}: {stderr}",
                main.display()
            );
        }
    }
}

#[test]
fn maintainer_scripts_are_valid_sh() {
    for name in ["postinst", "prerm", "postrm"] {
        let path = packaging("debian").join(name);
        let text = read(&path);
        assert!(text.starts_with("#!/bin/sh\n"), "{name}: #!/bin/sh");
        assert!(text.contains("#DEBHELPER#"), "{name}: #DEBHELPER# token");
        let (ok, output) = testkit::run(Command::new("sh").arg("-n").arg(&path));
        assert!(ok, "{name}: {output}");
    }
}

// ---- socket activation and readiness, as systemd drives them ----

/// sealgate under `systemd-socket-activate` (which creates the sockets, waits for the first
/// connection and then starts sealgate with them, as a socket unit does), with `NOTIFY_SOCKET`
/// pointing at a datagram socket the test reads.
struct Activated {
    child: std::process::Child,
    notify: std::os::unix::net::UnixDatagram,
}

impl Activated {
    /// `listen`: the addresses for `-l`; `names`: `--fdname`; `env`: sealgate's variables.
    fn start(dir: &Path, listen: &[String], names: &str, env: &[(&str, String)]) -> Activated {
        let notify_path = dir.join("notify");
        let notify =
            std::os::unix::net::UnixDatagram::bind(&notify_path).expect("bind notify socket");
        notify
            .set_read_timeout(Some(testkit::STARTUP_TIMEOUT))
            .expect("timeout");
        let mut cmd = Command::new(testkit::bin_path("systemd-socket-activate"));
        for address in listen {
            cmd.arg("-l").arg(address);
        }
        cmd.arg(format!("--fdname={names}"));
        let defaults = [
            (
                "SEALGATE_NEXT_HOP",
                format!("maildir:{}", dir.join("mail").display()),
            ),
            ("SEALGATE_KEYSTORE", dir.join("keys").display().to_string()),
            ("SEALGATE_METRICS_LISTEN", "off".to_string()),
            ("NOTIFY_SOCKET", notify_path.display().to_string()),
            ("NO_COLOR", "1".to_string()),
        ];
        let mut vars: BTreeMap<&str, String> = defaults.into_iter().collect();
        vars.extend(env.iter().cloned());
        for (key, value) in vars {
            cmd.arg(format!("--setenv={key}={value}"));
        }
        let child = cmd
            .arg(env!("CARGO_BIN_EXE_sealgate"))
            .arg("run")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start systemd-socket-activate");
        Activated { child, notify }
    }

    /// The next datagram sealgate sent to `NOTIFY_SOCKET`.
    fn notification(&self) -> String {
        let mut buf = [0u8; 512];
        let n = self
            .notify
            .recv(&mut buf)
            .expect("a notification from sealgate");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Waits for the process to end; its exit code and stderr.
    fn wait(mut self) -> (Option<i32>, String) {
        use std::io::Read as _;
        let mut status = None;
        let exited = testkit::poll_until(testkit::STARTUP_TIMEOUT, || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let mut log = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut log);
        }
        assert!(exited, "sealgate did not exit:\n{log}");
        (status.and_then(|s| s.code()), log)
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads one reply line from an LMTP or HTTP connection.
fn first_line(stream: &mut impl std::io::Read) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') && stream.read(&mut byte).expect("read") == 1 {
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

#[test]
fn socket_activation_serves_the_passed_sockets_and_notifies_systemd() {
    use std::io::Write as _;
    if !testkit::require("systemd-socket-activate") {
        return;
    }
    let dir = testkit::temp_dir("sealgate-activation-");
    let lmtp = dir.path().join("lmtp");
    let metrics = format!("127.0.0.1:{}", testkit::free_port());
    // Named out of order: the names, not the positions, decide.
    let sealgate = Activated::start(
        dir.path(),
        &[metrics.clone(), lmtp.display().to_string()],
        "metrics:lmtp",
        &[
            ("SEALGATE_LMTP_LISTEN", format!("unix:{}", lmtp.display())),
            ("SEALGATE_METRICS_LISTEN", metrics.clone()),
        ],
    );
    // systemd-socket-activate binds (the file appears) before it listens: until then a
    // connection is refused, so the first successful connect is the synchronisation point.
    let mut connected = None;
    testkit::wait_until("the activation socket", testkit::STARTUP_TIMEOUT, || {
        connected = std::os::unix::net::UnixStream::connect(&lmtp).ok();
        connected.is_some()
    });
    let mode_before = fs::metadata(&lmtp).expect("socket").permissions();
    // The first connection starts sealgate, which then answers it.
    let mut client = connected.expect("connected");
    client
        .set_read_timeout(Some(testkit::STARTUP_TIMEOUT))
        .expect("timeout");
    let greeting = first_line(&mut client);
    assert!(greeting.starts_with("220 "), "greeting: {greeting:?}");
    let ready = sealgate.notification();
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    client.write_all(b"QUIT\r\n").expect("QUIT");
    assert!(first_line(&mut client).starts_with("221 "));

    let mut http = std::net::TcpStream::connect(&metrics).expect("connect metrics");
    http.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
        .expect("GET");
    http.set_read_timeout(Some(testkit::STARTUP_TIMEOUT))
        .expect("timeout");
    let status = first_line(&mut http);
    assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");

    testkit::signal(i64::from(sealgate.child.id()), "TERM");
    let stopping = sealgate.notification();
    assert!(stopping.starts_with("STOPPING=1"), "{stopping:?}");
    let (code, log) = sealgate.wait();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("listener from systemd"), "{log}");
    // systemd's socket: neither removed nor re-moded by sealgate.
    let after = fs::metadata(&lmtp).expect("the socket file is still there");
    assert_eq!(after.permissions(), mode_before);
}

/// sealgate's settings for a test case, from its temporary directory.
type Settings = fn(&Path) -> Vec<(&'static str, String)>;

#[test]
fn socket_activation_refuses_sockets_the_configuration_does_not_name() {
    if !testkit::require("systemd-socket-activate") {
        return;
    }
    // (descriptor name, the variable the refusal names, sealgate's settings)
    let cases: [(&str, &str, Settings); 3] = [
        // A different path than SEALGATE_LMTP_LISTEN.
        ("lmtp", "SEALGATE_LMTP_LISTEN", |d| {
            vec![(
                "SEALGATE_LMTP_LISTEN",
                format!("unix:{}", d.join("other").display()),
            )]
        }),
        // A milter socket while the milter is off.
        ("milter", "SEALGATE_MILTER_LISTEN", |_| vec![]),
        // TCP configured, a unix socket passed.
        ("lmtp", "SEALGATE_LMTP_LISTEN", |_| {
            vec![("SEALGATE_LMTP_LISTEN", "127.0.0.1:10024".to_string())]
        }),
    ];
    for (name, variable, env) in cases {
        let dir = testkit::temp_dir("sealgate-activation-");
        let socket = dir.path().join("socket");
        let sealgate = Activated::start(
            dir.path(),
            &[socket.display().to_string()],
            name,
            &env(dir.path()),
        );
        // Connecting starts sealgate; refused until the socket listens (see above).
        let mut activating = None;
        testkit::wait_until("the activation socket", testkit::STARTUP_TIMEOUT, || {
            activating = std::os::unix::net::UnixStream::connect(&socket).ok();
            activating.is_some()
        });
        let (code, log) = sealgate.wait();
        assert_eq!(code, Some(78), "fd named {name}: {log}");
        assert!(log.contains(variable), "fd named {name}: {log}");
    }
}

// ---- the unit's system call filter against what sealgate really calls ----

/// The system calls in a `systemd-analyze syscall-filter` group, nested groups expanded.
fn syscall_group(group: &str) -> std::collections::BTreeSet<String> {
    let (ok, output) =
        testkit::run(Command::new("systemd-analyze").args(["syscall-filter", group]));
    assert!(ok, "systemd-analyze syscall-filter {group}: {output}");
    let mut calls = std::collections::BTreeSet::new();
    for line in output.lines().skip(1) {
        let entry = line.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        if entry.starts_with('@') {
            calls.extend(syscall_group(entry));
        } else {
            calls.insert(entry.to_string());
        }
    }
    calls
}

/// The unit's `SystemCallFilter=` lines: the first is the allow list, `~` lines deny.
fn allowed_syscalls() -> std::collections::BTreeSet<String> {
    let unit = read(&packaging("sealgate.service"));
    let mut allowed = std::collections::BTreeSet::new();
    for filter in unit
        .lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
    {
        let (deny, groups) = match filter.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, filter),
        };
        for group in groups.split_whitespace() {
            let calls = syscall_group(group);
            if deny {
                allowed.retain(|c| !calls.contains(c));
            } else {
                allowed.extend(calls);
            }
        }
    }
    assert!(allowed.len() > 100, "{allowed:?}");
    allowed
}

/// sealgate under strace through a whole life (start, an encrypted and a plain delivery,
/// metrics and readiness, SIGHUP reload, SIGTERM): every system call it makes must pass the
/// unit's `SystemCallFilter=`, or under systemd it would get EPERM.
#[test]
fn sealgate_needs_no_system_call_the_unit_filters() {
    if !testkit::require_all(&["strace", "systemd-analyze", "sq"]) {
        return;
    }
    use std::io::Write as _;
    let dir = testkit::temp_dir("sealgate-strace-");
    let keys = dir.path().join("keys");
    let cert = testkit::pgp::Sq::new().generate("alice", "Alice <alice@example.org>", "cv25519");
    let (ok, out) = testkit::sealgate::keys_import_with(&keys, &cert, |cmd| {
        cmd.env_clear().env("SEALGATE_KEYSTORE", &keys);
    });
    assert!(ok, "keys import: {out}");

    let port = testkit::free_port();
    let metrics = testkit::free_port();
    let trace = dir.path().join("trace");
    let notify = std::os::unix::net::UnixDatagram::bind(dir.path().join("notify")).expect("bind");
    notify
        .set_read_timeout(Some(testkit::STARTUP_TIMEOUT))
        .expect("timeout");
    let mut strace = Command::new(testkit::bin_path("strace"))
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_sealgate"))
        .arg("run")
        .env_clear()
        .env("SEALGATE_LMTP_LISTEN", format!("127.0.0.1:{port}"))
        .env("SEALGATE_METRICS_LISTEN", format!("127.0.0.1:{metrics}"))
        .env(
            "SEALGATE_NEXT_HOP",
            format!("maildir:{}", dir.path().join("mail").display()),
        )
        .env("SEALGATE_KEYSTORE", &keys)
        .env("NOTIFY_SOCKET", dir.path().join("notify"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start strace");
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 from sealgate");
    assert!(buf[..n].starts_with(b"READY=1"));

    let mut client = testkit::lmtp::Client::connect(port);
    client.expect("LHLO test", "250");
    let message = b"From: bob@example.net\r\nTo: alice@example.org\r\nSubject: hi\r\n\r\nhello\r\n";
    for rcpt in ["alice@example.org", "carol@example.org"] {
        let replies = client.deliver("bob@example.net", &[rcpt], message);
        assert!(replies.iter().all(|r| r.code == 250), "{replies:?}");
    }
    client.expect("QUIT", "221");
    for path in ["/metrics", "/readyz"] {
        let mut http = std::net::TcpStream::connect(("127.0.0.1", metrics)).expect("metrics");
        http.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .expect("GET");
        http.set_read_timeout(Some(testkit::STARTUP_TIMEOUT))
            .expect("timeout");
        assert!(first_line(&mut http).starts_with("HTTP/1.1 200"), "{path}");
    }
    // sealgate is strace's child.
    let children = fs::read_to_string(format!("/proc/{0}/task/{0}/children", strace.id()))
        .expect("strace's children");
    let pid: i64 = children.trim().parse().expect("one child");
    testkit::signal(pid, "HUP");
    let mut client = testkit::lmtp::Client::connect(port);
    client.expect("QUIT", "221");
    testkit::signal(pid, "TERM");
    let exited = testkit::poll_until(testkit::STARTUP_TIMEOUT, || {
        strace.try_wait().expect("try_wait").is_some()
    });
    if !exited {
        let _ = strace.kill();
    }
    assert!(exited, "sealgate did not stop");

    let allowed = allowed_syscalls();
    let mut used = std::collections::BTreeSet::new();
    for line in read(&trace).lines() {
        // "<pid> name(args…" or "<pid> <... name resumed>…"; signals and exits start with
        // "---" and "+++".
        let rest = line
            .split_once(' ')
            .map_or("", |(_, rest)| rest.trim_start());
        let rest = rest.strip_prefix("<... ").unwrap_or(rest);
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            used.insert(name);
        }
    }
    assert!(
        used.contains("accept4") || used.contains("accept"),
        "{used:?}"
    );
    let denied: Vec<&String> = used.iter().filter(|c| !allowed.contains(*c)).collect();
    assert!(
        denied.is_empty(),
        "sealgate calls {denied:?}, which sealgate.service's SystemCallFilter= denies \
         (all calls seen: {used:?})"
    );
}
