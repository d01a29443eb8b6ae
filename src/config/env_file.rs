//! systemd `EnvironmentFile=` syntax, parsed as systemd does (`parse_env_file` in systemd's
//! `env-file.c`), so `sealgate keys` sees the values the service sees. A codec without I/O.
//!
//! - Lines whose first non-blank character is `#` or `;` are comments; a backslash at the end
//!   of a comment line continues the comment.
//! - `KEY=VALUE`; blanks around the key and before the value are dropped. A key that is not a
//!   valid variable name (or a line without `=`) is ignored, as systemd ignores it with a
//!   warning.
//! - Unquoted values: `\x` is `x`, a backslash at the end of a line joins the next line,
//!   trailing blanks are dropped. `#` is not special inside a value: `A=1 # note` sets `1 # note`.
//! - `'...'`: literal. `"..."`: `\"`, `\\`, `` \` `` and `\$` are unescaped, a backslash before
//!   a newline joins lines, any other backslash is kept. Blanks after a closing quote are
//!   skipped and what follows is appended (`A="x" y` is `xy`).
//! - Both `\n` and `\r` end a line. A later assignment of a key wins.

/// A parse state of systemd's state machine.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    PreKey,
    Key,
    PreValue,
    Value,
    ValueEscape,
    SingleQuote,
    DoubleQuote,
    DoubleQuoteEscape,
    Comment,
    CommentEscape,
}

const NEWLINE: &[char] = &['\n', '\r'];
const BLANK: &[char] = &[' ', '\t', '\n', '\r'];

/// The assignments in `text`, in order (a key may repeat; the last one is what systemd uses).
pub fn parse(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut state = State::PreKey;
    let mut key = String::new();
    let mut value = String::new();
    // Length of `value` without trailing unquoted blanks (they are dropped at the end).
    let mut keep = 0;
    let mut push = |key: &mut String, value: &mut String, keep: usize| {
        value.truncate(keep);
        let name = key.trim_end_matches(BLANK);
        if valid_name(name) {
            out.push((name.to_string(), std::mem::take(value)));
        }
        key.clear();
        value.clear();
    };
    for c in text.chars() {
        match state {
            State::PreKey => {
                if c == '#' || c == ';' {
                    state = State::Comment;
                } else if !BLANK.contains(&c) {
                    state = State::Key;
                    key.push(c);
                }
            }
            State::Key => {
                if NEWLINE.contains(&c) {
                    // No `=`: ignored.
                    state = State::PreKey;
                    key.clear();
                } else if c == '=' {
                    state = State::PreValue;
                    keep = 0;
                } else {
                    key.push(c);
                }
            }
            State::PreValue => {
                if NEWLINE.contains(&c) {
                    state = State::PreKey;
                    push(&mut key, &mut value, keep);
                } else if c == '\'' {
                    state = State::SingleQuote;
                } else if c == '"' {
                    state = State::DoubleQuote;
                } else if c == '\\' {
                    state = State::ValueEscape;
                } else if !BLANK.contains(&c) {
                    state = State::Value;
                    value.push(c);
                    keep = value.len();
                }
            }
            State::Value => {
                if NEWLINE.contains(&c) {
                    state = State::PreKey;
                    push(&mut key, &mut value, keep);
                } else if c == '\\' {
                    state = State::ValueEscape;
                } else {
                    value.push(c);
                    if !BLANK.contains(&c) {
                        keep = value.len();
                    }
                }
            }
            State::ValueEscape => {
                state = State::Value;
                if !NEWLINE.contains(&c) {
                    value.push(c);
                    keep = value.len();
                }
            }
            State::SingleQuote => {
                if c == '\'' {
                    state = State::PreValue;
                } else {
                    value.push(c);
                    keep = value.len();
                }
            }
            State::DoubleQuote => {
                if c == '"' {
                    state = State::PreValue;
                } else if c == '\\' {
                    state = State::DoubleQuoteEscape;
                } else {
                    value.push(c);
                    keep = value.len();
                }
            }
            State::DoubleQuoteEscape => {
                state = State::DoubleQuote;
                if ['"', '\\', '`', '$'].contains(&c) {
                    value.push(c);
                } else if c != '\n' {
                    value.push('\\');
                    value.push(c);
                }
                keep = value.len();
            }
            State::Comment => {
                if c == '\\' {
                    state = State::CommentEscape;
                } else if NEWLINE.contains(&c) {
                    state = State::PreKey;
                }
            }
            State::CommentEscape => state = State::Comment,
        }
    }
    // End of file ends the last line, whatever its state (an open quote included, as systemd).
    if matches!(
        state,
        State::PreValue
            | State::Value
            | State::ValueEscape
            | State::SingleQuote
            | State::DoubleQuote
            | State::DoubleQuoteEscape
    ) {
        push(&mut key, &mut value, keep);
    }
    out
}

/// systemd's `env_name_is_valid`: letters, digits and `_`, not starting with a digit.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn one(text: &str) -> Vec<(String, String)> {
        parse(text)
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn comments_blanks_and_plain_values() {
        let text = "# comment\n; also\n\n  A = 1  \nB=two words\t\nC=\nD=x=y\n";
        assert_eq!(
            one(text),
            kv(&[("A", "1"), ("B", "two words"), ("C", ""), ("D", "x=y")])
        );
    }

    #[test]
    fn inline_hash_is_part_of_the_value() {
        assert_eq!(
            one("A=1 # not a comment\n"),
            kv(&[("A", "1 # not a comment")])
        );
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(one("A='a \\b \"c\"'\n"), kv(&[("A", "a \\b \"c\"")]));
        assert_eq!(
            one("A=\"q \\\" \\\\ \\$ \\` \\n\"\n"),
            kv(&[("A", "q \" \\ $ ` \\n")])
        );
        assert_eq!(one("A=\"x\"  y\n"), kv(&[("A", "xy")]));
        assert_eq!(one("A=a\\ b\\\\\n"), kv(&[("A", "a b\\")]));
        assert_eq!(one("A=\"  padded  \"\n"), kv(&[("A", "  padded  ")]));
    }

    #[test]
    fn continuations() {
        assert_eq!(one("A=one\\\ntwo\nB=3"), kv(&[("A", "onetwo"), ("B", "3")]));
        assert_eq!(one("A=\"x\\\ny\"\n"), kv(&[("A", "xy")]));
        assert_eq!(one("# c \\\nA=hidden\nB=1\n"), kv(&[("B", "1")]));
    }

    #[test]
    fn invalid_lines_are_ignored_and_last_wins_is_the_callers() {
        let text = "no equals sign\n1A=x\nA B=x\nexport C=1\nD=1\nD=2\r\nE=3";
        assert_eq!(one(text), kv(&[("D", "1"), ("D", "2"), ("E", "3")]));
    }
}
