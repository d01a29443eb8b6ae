//! An environment file read the way systemd's `EnvironmentFile=` reads it (systemd.exec(5)):
//! `#` and `;` lines are comments, a trailing backslash joins lines, `KEY=VALUE` with blanks
//! around the key and before the value dropped, a value in single or double quotes unquoted,
//! and otherwise the value kept as written up to trailing blanks: a `# ...` after a value is
//! part of the value, not a comment. (Task B's `sealgate keys` has its own parser in src/; the
//! two should be unified.)

/// The `(KEY, VALUE)` pairs of `text`, in order; `Err` names the first line systemd would
/// ignore with a warning (no `=`, or a key that is not a variable name).
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut logical = String::new();
    for raw in text.lines() {
        if logical.is_empty() {
            let start = raw.trim_start();
            if start.is_empty() || start.starts_with('#') || start.starts_with(';') {
                continue;
            }
        }
        if let Some(joined) = raw.strip_suffix('\\') {
            logical.push_str(joined);
            continue;
        }
        logical.push_str(raw);
        let line = std::mem::take(&mut logical);
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("not KEY=VALUE: {line:?}"))?;
        let key = key.trim();
        let valid = key
            .bytes()
            .enumerate()
            .all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()));
        if key.is_empty() || !valid {
            return Err(format!("not a variable name: {key:?}"));
        }
        out.push((key.to_string(), unquote(value.trim_start())));
    }
    Ok(out)
}

fn unquote(value: &str) -> String {
    let value = value.trim_end();
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            let inner = &value[1..value.len() - 1];
            if quote == '\'' {
                return inner.to_string();
            }
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match (c, chars.clone().next()) {
                    ('\\', Some(next @ ('"' | '\\' | '$' | '`'))) => {
                        out.push(next);
                        chars.next();
                    }
                    _ => out.push(c),
                }
            }
            return out;
        }
    }
    value.to_string()
}
