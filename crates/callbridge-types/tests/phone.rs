//! The normalisation rule on the numbers operators actually bring: a US number typed
//! with punctuation, a UK number in international form, a country code that does not
//! exist, a number longer than E.164 allows, and the integration guide's own ten-digit
//! Indian number.

use callbridge_types::phone::{E164, RefusedNumber, Region, SendForm, normalise};

fn region(code: &str) -> Option<Region> {
    Some(Region::parse(code).unwrap())
}

#[test]
fn a_us_number_with_punctuation_reads_with_region_us() {
    let number = normalise("(212) 555-0100", region("US")).unwrap();
    assert_eq!(number.as_str(), "+12125550100");
    assert_eq!(number.national(), "2125550100");
    assert_eq!(number.calling_code(), 1);
}

#[test]
fn an_international_number_keeps_its_own_country_whatever_the_region() {
    for default in [None, region("IN"), region("US"), region("GB")] {
        let number = normalise("+44 20 7183 8750", default).unwrap();
        assert_eq!(number.as_str(), "+442071838750", "{default:?}");
        assert_eq!(number.national(), "2071838750");
    }
}

#[test]
fn a_country_code_that_does_not_exist_is_refused() {
    assert_eq!(
        normalise("+0123", region("IN")),
        Err(RefusedNumber::InvalidCountryCode("012".into()))
    );
    let message = normalise("+0123", region("IN")).unwrap_err().to_string();
    assert_eq!(message, "+012 is not a country calling code");
}

#[test]
fn sixteen_digits_are_more_than_e164_allows() {
    for raw in ["1234567890123456", "+1234567890123456"] {
        let refused = normalise(raw, region("IN")).unwrap_err();
        assert!(
            matches!(
                refused,
                RefusedNumber::TooManyDigits(_) | RefusedNumber::NotValid(_)
            ),
            "{raw}: {refused:?}"
        );
        assert!(!refused.to_string().contains(raw));
    }
    assert!(matches!(
        normalise("+9198765432101234", region("IN")),
        Err(RefusedNumber::TooManyDigits(16))
    ));
}

#[test]
fn the_guides_ten_digit_number_is_indian_with_region_in() {
    let number = normalise("9876543210", region("IN")).unwrap();
    assert_eq!(number.as_str(), "+919876543210");
    // Sent to the API as the guide shows it, by default.
    assert_eq!(
        number.sent_form(SendForm::default(), region("IN")),
        Some("9876543210")
    );
    assert_eq!(
        number.sent_form(SendForm::E164, region("IN")),
        Some("+919876543210")
    );
    // The same number typed other ways is the same number.
    for raw in [
        "+91 98765 43210",
        "098765 43210",
        "0091-9876543210",
        "98765.43210",
    ] {
        assert_eq!(normalise(raw, region("IN")).as_ref(), Ok(&number), "{raw}");
    }
}

#[test]
fn without_a_default_region_a_national_number_is_refused_with_what_to_write() {
    let refused = normalise("9876543210", None).unwrap_err();
    assert_eq!(refused, RefusedNumber::NoCountry);
    assert!(refused.to_string().contains("+<country code>"));
}

#[test]
fn the_national_form_is_refused_for_a_number_of_another_country() {
    let uk: E164 = normalise("+44 20 7183 8750", region("IN")).unwrap();
    assert_eq!(uk.sent_form(SendForm::National, region("IN")), None);
    assert_eq!(
        uk.sent_form(SendForm::National, region("GB")),
        Some("2071838750")
    );
}

#[test]
fn what_is_not_a_number_is_refused_without_repeating_it() {
    for (raw, expected) in [
        ("", RefusedNumber::Empty),
        (" - ", RefusedNumber::Empty),
        ("98765x3210", RefusedNumber::UnexpectedCharacter),
        ("1-800-FLOWERS", RefusedNumber::UnexpectedCharacter),
        ("٩٨٧٦٥٤٣٢١٠", RefusedNumber::UnexpectedCharacter),
        ("98765+43210", RefusedNumber::MisplacedPlus),
        ("++9876543210", RefusedNumber::MisplacedPlus),
        ("+", RefusedNumber::TooShort),
    ] {
        assert_eq!(normalise(raw, region("IN")), Err(expected), "{raw:?}");
    }
    for raw in ["12", "12345", "+91 12345"] {
        let refused = normalise(raw, region("IN")).unwrap_err();
        assert!(
            matches!(
                refused,
                RefusedNumber::TooShort | RefusedNumber::NotValid(_)
            ),
            "{raw}: {refused:?}"
        );
        assert!(!refused.to_string().contains(raw), "{refused}");
    }
}

#[test]
fn send_form_reads_its_two_spellings() {
    assert_eq!(SendForm::parse("national"), Ok(SendForm::National));
    assert_eq!(SendForm::parse(" E164 "), Ok(SendForm::E164));
    assert!(SendForm::parse("international").is_err());
}
