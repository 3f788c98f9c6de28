//! Postgres COPY's text format, which the CLI's bulk loads (`enqueue`, `dnc import`)
//! stream rows in.

/// Appends `text` as a field of COPY's text format, where a backslash starts an escape
/// and tab and newline separate fields and rows. (A normalised phone number is digits and
/// an optional `+`, see `callbridge_types::phone`, so it needs none of this.)
pub fn append_copy_text(out: &mut Vec<u8>, text: &str) {
    for byte in text.bytes() {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(byte),
        }
    }
}

/// COPY's text for a NULL field.
pub const COPY_NULL: &[u8] = b"\\N";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_and_backslashes_are_escaped_and_the_rest_kept() {
        let mut out = Vec::new();
        append_copy_text(&mut out, "a\tb\nc\rd\\e — ü");
        assert_eq!(out, "a\\tb\\nc\\rd\\\\e — ü".as_bytes());
    }
}
