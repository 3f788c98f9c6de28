//! An error and its causes as one line of text, for logs and for what a person reads
//! at a terminal: `what failed: why: why`.

/// The error and its causes on one line, like anyhow's `{:#}`, but without repeating a
/// cause that the previous message already quotes (sqlx's I/O errors embed their
/// source's text), and with every run of whitespace (a newline in a server's message)
/// made one space.
pub fn one_line(error: &anyhow::Error) -> String {
    join_causes(error.chain().map(ToString::to_string))
}

/// [`one_line`] for a plain error, whose `Display` may omit its cause (reqwest's,
/// lapin's, an error enum with a `#[source]`).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let causes = std::iter::successors(Some(error), |error| error.source());
    join_causes(causes.map(ToString::to_string))
}

fn join_causes(causes: impl Iterator<Item = String>) -> String {
    let mut line = String::new();
    for text in causes {
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() || line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("the request failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_plain_errors_causes_follow_it_on_one_line() {
        let error = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection\nrefused",
        ));
        assert_eq!(
            error_chain(&error),
            "the request failed: connection refused"
        );
    }

    #[test]
    fn a_cause_the_previous_message_already_quotes_is_not_repeated() {
        let io = std::io::Error::other("connection reset by peer");
        let error = anyhow::Error::new(io)
            .context("error communicating with database: connection reset by peer")
            .context("while claiming rows");
        assert_eq!(
            one_line(&error),
            "while claiming rows: error communicating with database: connection reset by peer"
        );
    }
}
