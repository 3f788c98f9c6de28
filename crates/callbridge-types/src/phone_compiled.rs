//! The `phonenumber` crate's parse and validity rules for a number typed as digits (after
//! an optional leading `+`), step by step as the crate runs them, over the crate's own
//! metadata, but with each metadata pattern compiled once into a `regex::Regex`.
//!
//! Why: the crate keeps its patterns in one cache shared by the whole process
//! (`regex_cache`, an LRU behind a mutex) and looks each pattern up by its text, under
//! that lock, every time it is matched; reading a number matches a dozen of them. That
//! costs about 14 µs a number, and threads wait on each other for the lock, so a file
//! of a million numbers takes most of a minute whatever the cores. Here a number costs
//! about a microsecond and threads never wait.
//!
//! What it must be: the same function as `phonenumber::parse` followed by
//! `PhoneNumber::is_valid`, for every input it answers. Each step below names the crate
//! function it follows (phonenumber 0.3.10, `parser/mod.rs`, `parser/helper.rs`,
//! `validator.rs`, `metadata/descriptor.rs`); the patterns are compiled from the same
//! text with the same options (`ignore_whitespace`, the cache's size limits). Inputs it is
//! not sure of (fewer than three digits, a region the metadata lacks, a pattern that
//! does not compile, a step where the crate would panic) get `None`, and the caller asks
//! the crate. A property test compares the two over many random inputs and regions
//! (`tests/phone.rs`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock};

use phonenumber::country::Id;
use phonenumber::metadata::{DATABASE, Descriptor, Metadata};
use phonenumber::{NationalNumber, ParseError};
use regex::{Regex, RegexBuilder};

/// What the crate says of a number: its country calling code, its national number, and
/// whether `is_valid` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub calling_code: u16,
    pub national: NationalNumber,
    pub valid: bool,
}

/// `consts::MIN_LENGTH_FOR_NSN` and `MAX_LENGTH_FOR_NSN` of the crate.
const MIN_LENGTH_FOR_NSN: usize = 2;
const MAX_LENGTH_FOR_NSN: usize = 17;
/// `consts::MAX_LENGTH_FOR_COUNTRY_CODE`.
const MAX_LENGTH_FOR_COUNTRY_CODE: usize = 3;

/// `phonenumber::parse(country, text)` then `is_valid`, where `text` is `+digits` when
/// `plus`, else `digits` (ASCII digits only), and `country` is `region` for a national
/// number and none after `+`, as `phone::normalise` calls it. `None`: not answered here.
pub(crate) fn parse(
    region: Option<Id>,
    plus: bool,
    digits: &str,
) -> Option<Result<Parsed, ParseError>> {
    // `is_viable` holds for three digits or more, with or without a leading `+`; the
    // RFC 3966 and natural-language readers both take such a text as it is.
    if digits.len() < 3 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let country = if plus {
        None
    } else {
        let meta = DATABASE.by_id(region?.as_ref())?;
        Some((meta, rules(meta)?))
    };

    // `helper::international_prefix`: after `+` the country comes from the number; a
    // national number that starts with the region's IDD (`00`…) followed by anything but
    // `0` is read as international.
    let mut from_number = plus;
    let mut national = digits;
    if let Some((_, rules)) = country
        && let Some(idd) = &rules.international_prefix
        && let Some(found) = idd.find(national)
        && found.start() == 0
        && !national[found.end()..].starts_with('0')
    {
        from_number = true;
        national = &national[found.end()..];
    }

    // `helper::country_code`.
    let calling_code = if from_number {
        if national.len() <= MIN_LENGTH_FOR_NSN {
            return Some(Err(ParseError::TooShortNsn));
        }
        if national.starts_with('0') {
            return Some(Err(ParseError::InvalidCountryCode));
        }
        let found = (1..=MAX_LENGTH_FOR_COUNTRY_CODE).find_map(|length| {
            let code: u16 = national[..length].parse().ok()?;
            CODES.known(code).then_some((code, length))
        });
        let Some((code, length)) = found else {
            return Some(Err(ParseError::InvalidCountryCode));
        };
        national = &national[length..];
        code
    } else {
        let (meta, rules) = country?;
        let code = meta.country_code();
        let code_text = code.to_string();
        if national.starts_with(&code_text)
            && (!rules.general.is_match(national)
                || !rules.general_length(national.len()).is_possible())
        {
            national = &national[code_text.len()..];
        }
        code
    };

    // `parser::parse_with`: the metadata the national prefix is read with.
    let meta = match country {
        Some((meta, _)) => Some(meta),
        None => source_for(calling_code, national.trim_start_matches('0'))?,
    };
    let mut national = Cow::Borrowed(national);
    if let Some(meta) = meta {
        let rules = rules(meta)?;
        let mut potential = strip_national_prefix(rules, &national)?;
        if let Some(prefix) = &rules.national_prefix
            && potential.starts_with(prefix.as_str())
        {
            potential = Cow::Owned(potential[prefix.len()..].to_owned());
        }
        if rules.general_length(potential.len()) != Length::TooShort {
            national = Cow::Owned(potential.into_owned());
        }
    }
    if national.len() < MIN_LENGTH_FOR_NSN {
        return Some(Err(ParseError::TooShortNsn));
    }
    if national.len() > MAX_LENGTH_FOR_NSN {
        return Some(Err(ParseError::TooLong));
    }
    let national: NationalNumber = match national.parse() {
        Ok(national) => national,
        Err(error) => return Some(Err(error)),
    };

    // `validator::is_valid_with`.
    let national_text = national.to_string();
    let valid = match source_for(calling_code, &national_text)? {
        Some(meta) => rules(meta)?.number_type_known(&national_text),
        None => false,
    };
    Some(Ok(Parsed {
        calling_code,
        national,
        valid,
    }))
}

/// `validator::source_for`: the metadata a national number of `code` is read with.
/// Outer `None`: not answered here; inner `None`: the crate finds none.
fn source_for(code: u16, national: &str) -> Option<Option<&'static Metadata>> {
    let Some(regions) = CODES.regions(code) else {
        return Some(None);
    };
    if let [region] = regions {
        return Some(if *region == "001" {
            DATABASE
                .by_code(&code)
                .and_then(|metas| metas.into_iter().next())
        } else {
            region
                .parse::<Id>()
                .ok()
                .and_then(|id| DATABASE.by_id(id.as_ref()))
        });
    }
    for region in regions {
        let meta = DATABASE.by_id(*region)?;
        let rules = rules(meta)?;
        let chosen = match &rules.leading_digits {
            Some(pattern) => pattern.find(national).is_some_and(|at| at.start() == 0),
            None => rules.number_type_known(national),
        };
        if chosen {
            let id = region.parse::<Id>().ok()?;
            return Some(DATABASE.by_id(id.as_ref()));
        }
    }
    Some(None)
}

/// `helper::national_number`: the national number with the region's national prefix
/// (and carrier code) taken off, or turned by its transform rule. `None`: the crate
/// would panic here.
fn strip_national_prefix<'a>(rules: &Rules, national: &'a str) -> Option<Cow<'a, str>> {
    let Some(parsing) = &rules.national_prefix_for_parsing else {
        if let Some(prefix) = &rules.national_prefix
            && national.starts_with(prefix.as_str())
        {
            return Some(Cow::Borrowed(&national[prefix.len()..]));
        }
        return Some(Cow::Borrowed(national));
    };
    let Some(found) = parsing.find(national) else {
        return Some(Cow::Borrowed(national));
    };
    if found.start() != 0 {
        return Some(Cow::Borrowed(national));
    }
    let viable = rules.general.is_match(national);
    let captures = parsing.captures(national)?;
    let first = captures.get(1);
    let last = captures.get(captures.len() - 1);
    match (&rules.national_prefix_transform_rule, last) {
        (Some(transform), Some(_)) => {
            let transformed = parsing.replace(national, transform.as_str()).into_owned();
            if viable && !rules.general.is_match(&transformed) {
                return Some(Cow::Borrowed(national));
            }
            // The crate takes the first group as the carrier code, unwrapped: without one
            // it panics, and that is left to it.
            first?;
            Some(Cow::Owned(transformed))
        }
        _ => {
            // The crate checks the text from the match's start, which is 0 here: the
            // number itself, which `viable` says matches.
            if viable && !rules.general.is_match(national) {
                return Some(Cow::Borrowed(national));
            }
            Some(Cow::Borrowed(&national[found.end()..]))
        }
    }
}

/// `validator::Validation` as far as the parse asks about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Length {
    PossibleLocalOnly,
    Possible,
    TooShort,
    TooLong,
    Invalid,
}

impl Length {
    fn is_possible(self) -> bool {
        matches!(self, Length::Possible | Length::PossibleLocalOnly)
    }
}

/// `metadata::Descriptor` with its pattern compiled.
#[derive(Debug)]
struct CompiledDescriptor {
    national_number: Regex,
    possible_length: Vec<u16>,
    possible_local_length: Vec<u16>,
}

impl CompiledDescriptor {
    fn compile(descriptor: &Descriptor) -> Option<CompiledDescriptor> {
        Some(CompiledDescriptor {
            national_number: compile(descriptor.national_number().as_str())?,
            possible_length: descriptor.possible_length().to_vec(),
            possible_local_length: descriptor.possible_local_length().to_vec(),
        })
    }

    /// `Descriptor::is_match`: a possible length, and the pattern found at the start.
    fn is_match(&self, value: &str) -> bool {
        let length = u16::try_from(value.len()).unwrap_or(u16::MAX);
        if !self.possible_length.is_empty() && !self.possible_length.contains(&length) {
            return false;
        }
        self.national_number
            .find(value)
            .is_some_and(|found| found.start() == 0)
    }
}

/// One region's metadata, its patterns compiled.
#[derive(Debug)]
struct Rules {
    international_prefix: Option<Regex>,
    national_prefix: Option<String>,
    national_prefix_for_parsing: Option<Regex>,
    national_prefix_transform_rule: Option<String>,
    leading_digits: Option<Regex>,
    general: CompiledDescriptor,
    /// The types `validator::number_type` looks for after the general description:
    /// any of them makes a number's type known.
    types: Vec<CompiledDescriptor>,
}

impl Rules {
    fn compile(meta: &Metadata) -> Option<Rules> {
        // Outer `None`: a pattern that does not compile.
        let pattern = |source: Option<&str>| match source {
            Some(source) => compile(source).map(Some),
            None => Some(None),
        };
        let descriptors = meta.descriptors();
        let types = [
            descriptors.premium_rate(),
            descriptors.toll_free(),
            descriptors.shared_cost(),
            descriptors.voip(),
            descriptors.personal_number(),
            descriptors.pager(),
            descriptors.uan(),
            descriptors.voicemail(),
            descriptors.fixed_line(),
            descriptors.mobile(),
        ];
        Some(Rules {
            international_prefix: pattern(meta.international_prefix().map(|regex| regex.as_str()))?,
            national_prefix: meta.national_prefix().map(str::to_owned),
            national_prefix_for_parsing: pattern(
                meta.national_prefix_for_parsing()
                    .map(|regex| regex.as_str()),
            )?,
            national_prefix_transform_rule: meta
                .national_prefix_transform_rule()
                .map(str::to_owned),
            leading_digits: pattern(meta.leading_digits().map(|regex| regex.as_str()))?,
            general: CompiledDescriptor::compile(descriptors.general())?,
            types: types
                .into_iter()
                .flatten()
                .map(CompiledDescriptor::compile)
                .collect::<Option<Vec<_>>>()?,
        })
    }

    /// `validator::number_type(meta, value) != Type::Unknown`.
    fn number_type_known(&self, value: &str) -> bool {
        self.general.is_match(value) && self.types.iter().any(|kind| kind.is_match(value))
    }

    /// `validator::length(meta, number, Type::Unknown)` for a national number of
    /// `length` digits (the general description's lengths).
    fn general_length(&self, length: usize) -> Length {
        let length = u16::try_from(length).unwrap_or(u16::MAX);
        let possible = &self.general.possible_length;
        let (Some(minimum), Some(maximum)) = (possible.first(), possible.last()) else {
            return Length::Invalid;
        };
        if self.general.possible_local_length.contains(&length) {
            Length::PossibleLocalOnly
        } else if length == *minimum {
            Length::Possible
        } else if length < *minimum {
            Length::TooShort
        } else if length > *maximum {
            Length::TooLong
        } else if possible.contains(&length) {
            Length::Possible
        } else {
            Length::Invalid
        }
    }
}

/// A metadata pattern compiled as the crate's cache compiles it.
fn compile(source: &str) -> Option<Regex> {
    RegexBuilder::new(source)
        .ignore_whitespace(true)
        .size_limit(10 * (1 << 20))
        .dfa_size_limit(2 * (1 << 20))
        .build()
        .ok()
}

/// A region's metadata: its id and calling code (the non-geographic entities share the
/// id `001`).
type RegionKey = (&'static str, u16);

/// Each region's rules, compiled the first time a number needs them.
static RULES: LazyLock<HashMap<RegionKey, OnceLock<Option<Rules>>>> = LazyLock::new(|| {
    DATABASE
        .iter()
        .map(|meta| ((meta.id(), meta.country_code()), OnceLock::new()))
        .collect()
});

fn rules(meta: &'static Metadata) -> Option<&'static Rules> {
    RULES
        .get(&(meta.id(), meta.country_code()))?
        .get_or_init(|| Rules::compile(meta))
        .as_ref()
}

/// The calling codes the metadata knows, and their regions in the metadata's order.
struct Codes {
    regions: Vec<Option<Vec<&'static str>>>,
    known: Vec<bool>,
}

impl Codes {
    fn known(&self, code: u16) -> bool {
        self.known.get(usize::from(code)).copied().unwrap_or(false)
    }

    fn regions(&self, code: u16) -> Option<&[&'static str]> {
        self.regions.get(usize::from(code))?.as_deref()
    }
}

/// Calling codes have at most three digits.
static CODES: LazyLock<Codes> = LazyLock::new(|| Codes {
    regions: (0..1000_u16).map(|code| DATABASE.region(&code)).collect(),
    known: (0..1000_u16)
        .map(|code| DATABASE.by_code(&code).is_some())
        .collect(),
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::parse_by_library;
    use proptest::prelude::*;

    /// Regions with each kind of rule: national prefixes (IN, GB), prefixes read with a
    /// transform rule (AR, MX, BR), Italy's kept zeros, calling codes shared by several
    /// regions (US and CA; RU and KZ; GB and its islands), long IDDs (US `011`, AU `0011`).
    const REGIONS: [&str; 24] = [
        "IN", "US", "CA", "GB", "JE", "IT", "AR", "MX", "BR", "RU", "KZ", "DE", "FR", "AU", "CN",
        "JP", "NZ", "ZA", "NG", "ID", "KR", "ES", "SG", "AE",
    ];

    /// Starts that reach the interesting branches: calling codes, IDDs, national
    /// prefixes, carrier codes.
    const STARTS: [&str; 28] = [
        "", "0", "00", "011", "0011", "0091", "0044", "001", "91", "1", "44", "39", "54", "549",
        "55", "5521", "52", "521", "7", "49", "33", "61", "86", "81", "64", "800", "979", "8",
    ];

    fn answer_of(region: Option<Id>, plus: bool, digits: &str) -> Option<Result<Parsed, String>> {
        parse(region, plus, digits).map(|answer| answer.map_err(|error| format!("{error:?}")))
    }

    fn library_answer(region: Option<Id>, plus: bool, digits: &str) -> Result<Parsed, String> {
        parse_by_library(region, plus, digits).map_err(|error| format!("{error:?}"))
    }

    /// `normalise` reads a text after `+` without a region, and one without `+` with it.
    fn check(region: &str, plus: bool, digits: &str) -> Result<(), TestCaseError> {
        let region = if plus {
            None
        } else {
            Some(region.parse::<Id>().unwrap())
        };
        if let Some(answer) = answer_of(region, plus, digits) {
            prop_assert_eq!(
                answer,
                library_answer(region, plus, digits),
                "{:?} plus={} {}",
                region,
                plus,
                digits
            );
        }
        Ok(())
    }

    proptest! {
        // The crate's own path costs about a millisecond a number in a debug build (its
        // pattern cache thrashes across regions): 5,000 cases each were run when this
        // path was written; the suite keeps a thousand.
        #![proptest_config(ProptestConfig::with_cases(1_000))]

        #[test]
        fn any_digits_get_the_librarys_answer(
            region in proptest::sample::select(&REGIONS[..]),
            plus in any::<bool>(),
            digits in "[0-9]{3,19}",
        ) {
            check(region, plus, &digits)?;
        }

        #[test]
        fn digits_after_a_known_start_get_the_librarys_answer(
            region in proptest::sample::select(&REGIONS[..]),
            plus in any::<bool>(),
            start in proptest::sample::select(&STARTS[..]),
            rest in "[0-9]{1,15}",
        ) {
            let digits = format!("{start}{rest}");
            if digits.len() <= 19 && !(plus && digits.starts_with('0')) {
                check(region, plus, &digits)?;
            }
        }
    }

    #[test]
    fn the_usual_shapes_are_answered_here_and_as_the_library_answers() {
        let india = Some(Id::IN);
        for (region, plus, digits) in [
            (None, true, "919876543210"),
            (india, false, "9876543210"),
            (india, false, "09876543210"),
            (india, false, "00919876543210"),
            (None, true, "442071838750"),
            (Some(Id::GB), false, "02071838750"),
            (None, true, "390236618300"),
            (None, true, "5491123456789"),
            (Some(Id::AR), false, "01123456789"),
            (None, true, "12125550100"),
            (Some(Id::US), false, "2125550100"),
            (None, true, "0123"),
            (india, false, "9876543210123456"),
        ] {
            let answer = answer_of(region, plus, digits);
            assert!(answer.is_some(), "{region:?} {plus} {digits}: not answered");
            assert_eq!(
                answer.unwrap(),
                library_answer(region, plus, digits),
                "{region:?} {plus} {digits}"
            );
        }
        // A bench-like list: Indian mobiles written in E.164.
        for n in (0..100_000_000_u64).step_by(99_991) {
            let digits = format!("9198{n:08}");
            assert_eq!(
                answer_of(None, true, &digits).unwrap(),
                library_answer(None, true, &digits),
                "{digits}"
            );
        }
    }
}
