//! Errors as the process reports them: one line with every cause.

/// Any error, boxed, for a cause whose type a caller need not know.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `err` and its causes, joined by ": ", for logs and one-line messages.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        text.push_str(": ");
        text.push_str(&err.to_string());
        cause = err.source();
    }
    text
}
