//! Phone numbers: the one rule that turns what a person typed into an E.164 number
//! (`+919876543210`), and the form the centralized API is sent.
//!
//! A number is read with libphonenumber's rules (the `phonenumber` crate): separators
//! people type (spaces, `-`, `.`, `(`, `)`) go, a leading `+` or an international prefix
//! (`00` in most countries) gives the country, and a number without one is read as a
//! national number of the configured default region (its trunk prefix, such as India's
//! or the UK's `0`, removed). The result must be a valid number of its country by the
//! library's metadata, which refuses numbers too short or too long for their country and
//! country codes that do not exist.
//!
//! Letters are refused outright, although the library would read `1-800-FLOWERS` as
//! digits: a list of numbers holding letters is a wrong column, not vanity numbers.
//!
//! Every refusal says why without repeating the number: the messages go to terminals
//! and CI logs, and phone numbers are personal data.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use phonenumber::country::Id;

use crate::phone_compiled::{self, Parsed};

/// E.164 allows at most 15 digits, country code included.
pub const MAX_E164_DIGITS: usize = 15;

/// The region a number without a country code belongs to: an ISO 3166-1 alpha-2 code
/// the phone number metadata knows (`IN`, `US`, `GB`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region(Id);

impl Region {
    /// `IN`, `us`, ` GB ` (any case, trimmed); anything else is refused with an example.
    pub fn parse(text: &str) -> Result<Region, String> {
        let code = text.trim().to_ascii_uppercase();
        Id::from_str(&code).map(Region).map_err(|_| {
            format!(
                "must be a two-letter region code such as IN, US or GB; got {:?}",
                text.trim()
            )
        })
    }

    /// The country calling code of the region (`91` for IN), as E.164 writes it.
    pub fn calling_code(self) -> Option<u16> {
        phonenumber::metadata::DATABASE
            .by_id(self.0.as_ref())
            .map(|meta| meta.country_code())
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_ref())
    }
}

/// Which form of a number goes to the centralized API in `phone_number`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SendForm {
    /// The national significant number's digits (`9876543210`), as the integration
    /// guide's examples show. Only numbers of the default region can be sent this way:
    /// the form carries no country.
    #[default]
    National,
    /// E.164 (`+919876543210`).
    E164,
}

impl SendForm {
    pub fn parse(text: &str) -> Result<SendForm, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "national" => Ok(SendForm::National),
            "e164" => Ok(SendForm::E164),
            other => Err(format!("must be national or e164, got {other:?}")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SendForm::National => "national",
            SendForm::E164 => "e164",
        }
    }
}

/// A valid number in E.164 form, with the parts the other forms are made of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct E164 {
    /// `+919876543210`.
    e164: String,
    /// `91`.
    calling_code: u16,
    /// `9876543210`: the national significant number (leading zeros kept, as Italy's).
    national: String,
}

impl E164 {
    /// `+919876543210`.
    pub fn as_str(&self) -> &str {
        &self.e164
    }

    pub fn calling_code(&self) -> u16 {
        self.calling_code
    }

    /// The national significant number's digits: `9876543210`.
    pub fn national(&self) -> &str {
        &self.national
    }

    /// The form sent to the centralized API; `None` when the number cannot be sent in
    /// that form (a national form for a number of another country than the default
    /// region's: it would reach a number of the default region instead).
    pub fn sent_form(&self, form: SendForm, default_region: Option<Region>) -> Option<&str> {
        match form {
            SendForm::E164 => Some(&self.e164),
            SendForm::National => {
                let home = default_region.and_then(Region::calling_code)?;
                (home == self.calling_code).then_some(self.national.as_str())
            }
        }
    }

    /// The number as one integer, so a million numbers are remembered (to find repeats)
    /// in 8 bytes each: distinct E.164 numbers have distinct keys (at most 15 digits are
    /// under 2^50, and the digit count is kept so leading zeros count).
    pub fn key(&self) -> u64 {
        let digits = &self.e164[1..];
        let value = digits
            .bytes()
            .fold(0_u64, |value, digit| value * 10 + u64::from(digit - b'0'));
        (value << 4) | digits.len() as u64
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.e164)
    }
}

/// Why a text is not a number callbridge calls. `Display` never repeats the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefusedNumber {
    #[error("empty phone_number")]
    Empty,
    #[error("a character other than digits, spaces, '-', '.', '(', ')' and a leading '+'")]
    UnexpectedCharacter,
    #[error("'+' is allowed only at the start")]
    MisplacedPlus,
    #[error(
        "no country code, and no default region is configured to read it as a national number: write it as +<country code><number>"
    )]
    NoCountry,
    #[error("too few digits to be a phone number")]
    TooShort,
    #[error("{0} digits, at most {MAX_E164_DIGITS} allowed (E.164)")]
    TooManyDigits(usize),
    #[error("+{0} is not a country calling code")]
    InvalidCountryCode(String),
    #[error("not a valid number of country {0}: wrong length or an unassigned range")]
    NotValid(String),
}

fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '-' | '.' | '(' | ')')
}

/// `raw` as an E.164 number, a number without a country code read as a national number
/// of `default_region`; or why it is refused (see the module's rules).
pub fn normalise(raw: &str, default_region: Option<Region>) -> Result<E164, RefusedNumber> {
    let mut plus = false;
    let mut digits = String::with_capacity(raw.len());
    for c in raw.chars().filter(|c| !is_separator(*c)) {
        match c {
            '0'..='9' => digits.push(c),
            '+' if !plus && digits.is_empty() => plus = true,
            '+' => return Err(RefusedNumber::MisplacedPlus),
            _ => return Err(RefusedNumber::UnexpectedCharacter),
        }
    }
    if digits.is_empty() {
        return Err(if plus {
            RefusedNumber::TooShort
        } else {
            RefusedNumber::Empty
        });
    }
    if plus && digits.starts_with('0') {
        return Err(RefusedNumber::InvalidCountryCode(
            digits.chars().take(3).collect(),
        ));
    }
    // More digits than E.164 holds, even after an international prefix of up to four
    // digits (`0011`) and a trunk prefix: refused before the library reads it.
    if digits.len() > MAX_E164_DIGITS + 4 {
        return Err(RefusedNumber::TooManyDigits(digits.len()));
    }
    let region = if plus { None } else { default_region };
    if !plus && region.is_none() {
        return Err(RefusedNumber::NoCountry);
    }
    let region = region.map(|region| region.0);
    let parsed = match phone_compiled::parse(region, plus, &digits) {
        Some(parsed) => parsed,
        None => parse_by_library(region, plus, &digits),
    }
    .map_err(|error| {
        use phonenumber::ParseError;
        match error {
            ParseError::InvalidCountryCode => {
                RefusedNumber::InvalidCountryCode(digits.chars().take(3).collect())
            }
            ParseError::TooLong => RefusedNumber::TooManyDigits(digits.len()),
            _ => RefusedNumber::TooShort,
        }
    })?;
    let calling_code = parsed.calling_code;
    let national = format!(
        "{}{}",
        "0".repeat(usize::from(parsed.national.zeros())),
        parsed.national.value()
    );
    let e164 = format!("+{calling_code}{national}");
    let e164_digits = e164.len() - 1;
    if e164_digits > MAX_E164_DIGITS {
        return Err(RefusedNumber::TooManyDigits(e164_digits));
    }
    if !parsed.valid {
        return Err(RefusedNumber::NotValid(format!("+{calling_code}")));
    }
    Ok(E164 {
        e164,
        calling_code,
        national,
    })
}

/// What the `phonenumber` crate itself says of `digits` (after `+` when `plus`) read with
/// `region`: its parse, then its validity check. [`phone_compiled`] gives the same answer
/// faster for every text it answers.
pub(crate) fn parse_by_library(
    region: Option<Id>,
    plus: bool,
    digits: &str,
) -> Result<Parsed, phonenumber::ParseError> {
    let text = if plus {
        Cow::Owned(format!("+{digits}"))
    } else {
        Cow::Borrowed(digits)
    };
    let number = phonenumber::parse(region, &*text)?;
    Ok(Parsed {
        calling_code: number.code().value(),
        national: *number.national(),
        valid: number.is_valid(),
    })
}

/// Threads [`normalise_all`] shares its work out to, at most.
const MAX_NORMALISING_THREADS: usize = 8;
/// Below this many texts a thread each, [`normalise_all`] stays on the calling thread.
const MIN_TEXTS_PER_THREAD: usize = 1024;

/// [`normalise`] of every text of `raws`, in their order, on every core the machine has:
/// the library's rules cost about 14 µs a number, so a file of a million takes seconds.
/// Each text goes through the very same function; only the work is shared out.
pub fn normalise_all<S: AsRef<str> + Sync>(
    raws: &[S],
    default_region: Option<Region>,
) -> Vec<Result<E164, RefusedNumber>> {
    let one = |raw: &S| normalise(raw.as_ref(), default_region);
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_NORMALISING_THREADS)
        .min(raws.len() / MIN_TEXTS_PER_THREAD)
        .max(1);
    if threads == 1 {
        return raws.iter().map(one).collect();
    }
    let per_thread = raws.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let mut parts = raws.chunks(per_thread);
        let own = parts.next().unwrap_or_default();
        let others: Vec<_> = parts
            .map(|part| scope.spawn(move || part.iter().map(one).collect::<Vec<_>>()))
            .collect();
        let mut all: Vec<_> = own.iter().map(one).collect();
        for other in others {
            all.extend(
                other
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        all
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(code: &str) -> Option<Region> {
        Some(Region::parse(code).unwrap())
    }

    #[test]
    fn a_region_reads_in_any_case_and_knows_its_calling_code() {
        assert_eq!(Region::parse(" in ").unwrap().to_string(), "IN");
        assert_eq!(Region::parse("IN").unwrap().calling_code(), Some(91));
        assert_eq!(Region::parse("gb").unwrap().to_string(), "GB");
        assert!(Region::parse("India").is_err());
        assert!(Region::parse("").is_err());
    }

    #[test]
    fn normalising_many_on_every_core_gives_each_texts_own_answer_in_order() {
        let raws: Vec<String> = (0..5000)
            .map(|n| match n % 4 {
                0 => format!("98765{n:05}"),
                1 => format!("+91 98765 {n:05}"),
                2 => format!("x{n}"),
                _ => String::new(),
            })
            .collect();
        let all = normalise_all(&raws, region("IN"));
        assert_eq!(all.len(), raws.len());
        for (raw, answer) in raws.iter().zip(&all) {
            assert_eq!(*answer, normalise(raw, region("IN")), "{raw}");
        }
    }

    #[test]
    fn the_key_tells_numbers_apart() {
        let a = normalise("+44 20 7183 8750", None).unwrap();
        let b = normalise("020 7183 8750", region("GB")).unwrap();
        let c = normalise("9876543210", region("IN")).unwrap();
        assert_eq!(a.key(), b.key());
        assert_ne!(a.key(), c.key());
    }
}
