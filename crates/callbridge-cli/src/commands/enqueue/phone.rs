//! Phone numbers as `callbridge enqueue` stores them in `local_call_queue.phone_number`.
//!
//! The rule, chosen to fit both E.164 and the seed's own examples (`9876543210`, no
//! country code): separators people type (spaces, `-`, `.`, `(`, `)`) are removed, a
//! leading `+` is kept, everything else must be an ASCII digit, and 7 to 15 digits remain
//! (E.164 allows at most 15). The result is then at most 16 characters, inside the
//! seed's `VARCHAR(20)`. Nothing else is rewritten: `0044…` is not turned into `+44…`,
//! because whether a national prefix belongs to the number only the dialler knows.

use std::fmt;

pub const MIN_DIGITS: usize = 7;
pub const MAX_DIGITS: usize = 15;

/// Why a cell is not a phone number. `Display` never repeats the value: these messages go
/// to a terminal and CI logs, and phone numbers are personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneError {
    Empty,
    /// A character that is neither a digit, a separator, nor a leading `+`.
    UnexpectedCharacter,
    /// A `+` anywhere but at the start.
    MisplacedPlus,
    TooFewDigits(usize),
    TooManyDigits(usize),
}

impl fmt::Display for PhoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PhoneError::Empty => f.write_str("empty phone_number"),
            PhoneError::UnexpectedCharacter => f.write_str(
                "a character other than digits, spaces, '-', '.', '(', ')' and a leading '+'",
            ),
            PhoneError::MisplacedPlus => f.write_str("'+' is allowed only at the start"),
            PhoneError::TooFewDigits(digits) => {
                write!(f, "{digits} digits, at least {MIN_DIGITS} needed")
            }
            PhoneError::TooManyDigits(digits) => {
                write!(f, "{digits} digits, at most {MAX_DIGITS} allowed (E.164)")
            }
        }
    }
}

fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '-' | '.' | '(' | ')')
}

/// The stored form of `raw`, or why it is not a phone number.
pub fn normalise_phone(raw: &str) -> Result<String, PhoneError> {
    let mut normalised = String::with_capacity(raw.len());
    normalise_phone_into(raw, &mut normalised)?;
    Ok(normalised)
}

/// [`normalise_phone`] into a buffer the caller reuses (cleared first): a million-row file
/// then costs no allocation per number.
pub fn normalise_phone_into(raw: &str, normalised: &mut String) -> Result<(), PhoneError> {
    normalised.clear();
    let mut digits = 0;
    for c in raw.chars().filter(|c| !is_separator(*c)) {
        match c {
            '0'..='9' => {
                digits += 1;
                normalised.push(c);
            }
            '+' if normalised.is_empty() => normalised.push(c),
            '+' => return Err(PhoneError::MisplacedPlus),
            _ => return Err(PhoneError::UnexpectedCharacter),
        }
    }
    match digits {
        0 if normalised.is_empty() => Err(PhoneError::Empty),
        n if n < MIN_DIGITS => Err(PhoneError::TooFewDigits(n)),
        n if n > MAX_DIGITS => Err(PhoneError::TooManyDigits(n)),
        _ => Ok(()),
    }
}

/// A normalised number as one integer, so the numbers of a million-row file are remembered
/// (to find repeats) in 8 bytes each instead of a `String` each. Distinct numbers get
/// distinct keys: the key holds the digits' value (at most 15 digits, under 2^50), how many
/// digits there are (so `0044…` and `044…` differ) and whether a `+` leads.
pub fn phone_key(normalised: &str) -> u64 {
    let (plus, digits) = match normalised.strip_prefix('+') {
        Some(digits) => (1, digits),
        None => (0, normalised),
    };
    debug_assert!(digits.len() <= MAX_DIGITS && digits.bytes().all(|b| b.is_ascii_digit()));
    let value = digits
        .bytes()
        .fold(0_u64, |value, digit| value * 10 + u64::from(digit - b'0'));
    (value << 5) | ((digits.len() as u64) << 1) | plus
}

#[cfg(test)]
mod tests {
    use super::*;
    use callbridge_types::event::limits::PHONE_NUMBER_CHARS;

    #[test]
    fn separators_go_and_a_leading_plus_stays() {
        for (raw, stored) in [
            ("9876543210", "9876543210"),
            (" 98765 43210 ", "9876543210"),
            ("(987) 654-3210", "9876543210"),
            ("987.654.3210", "9876543210"),
            ("+44 20 7946 0958", "+442079460958"),
            ("+1 (555) 010-9999", "+15550109999"),
            ("1234567", "1234567"),
            ("123456789012345", "123456789012345"),
        ] {
            assert_eq!(normalise_phone(raw).as_deref(), Ok(stored), "{raw:?}");
        }
    }

    #[test]
    fn what_is_refused_and_why() {
        assert_eq!(normalise_phone(""), Err(PhoneError::Empty));
        assert_eq!(normalise_phone(" - "), Err(PhoneError::Empty));
        assert_eq!(normalise_phone("+"), Err(PhoneError::TooFewDigits(0)));
        assert_eq!(normalise_phone("123456"), Err(PhoneError::TooFewDigits(6)));
        assert_eq!(
            normalise_phone("1234567890123456"),
            Err(PhoneError::TooManyDigits(16))
        );
        assert_eq!(
            normalise_phone("98765x3210"),
            Err(PhoneError::UnexpectedCharacter)
        );
        assert_eq!(
            normalise_phone("٩٨٧٦٥٤٣٢١٠"),
            Err(PhoneError::UnexpectedCharacter)
        );
        assert_eq!(
            normalise_phone("98765+43210"),
            Err(PhoneError::MisplacedPlus)
        );
        assert_eq!(
            normalise_phone("++9876543210"),
            Err(PhoneError::MisplacedPlus)
        );
    }

    #[test]
    fn every_accepted_number_fits_the_column() {
        let longest = normalise_phone(&format!("+{}", "9".repeat(MAX_DIGITS))).unwrap();
        assert!(longest.chars().count() <= PHONE_NUMBER_CHARS);
    }

    #[test]
    fn distinct_numbers_have_distinct_keys() {
        let numbers = [
            "1234567",
            "01234567",
            "001234567",
            "+1234567",
            "+01234567",
            "1234568",
            "999999999999999",
            "+999999999999999",
            "0000000",
            "00000000",
        ];
        let keys: std::collections::HashSet<u64> =
            numbers.iter().map(|number| phone_key(number)).collect();
        assert_eq!(keys.len(), numbers.len());
        assert_eq!(
            phone_key(&normalise_phone("+44 20 7946 0958").unwrap()),
            phone_key("+442079460958")
        );
    }

    #[test]
    fn messages_never_repeat_the_value() {
        for raw in ["98765x3210", "12", "1234567890123456"] {
            let message = normalise_phone(raw).unwrap_err().to_string();
            assert!(!message.contains(raw), "{message}");
        }
    }
}
