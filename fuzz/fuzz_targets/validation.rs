//! Callback validation and normalisation on arbitrary bytes.
//!
//! Beyond "never panics": an accepted callback is storable as is (column widths, no
//! NUL, timestamp range and precision, normalised vocabularies), and validation is a
//! function of the JSON value alone, so the payload the envelope carries validates to
//! the same event again.
#![no_main]

use callbridge_fuzz::{assert_json_without_nul, assert_storable};
use callbridge_types::event::{SEED_FIELDS, derived_call_id, parse_callback, validate_callback};
use libfuzzer_sys::fuzz_target;

const DEFAULT_ACCOUNTCODE: &str = "ACME";

fuzz_target!(|body: &[u8]| {
    let Ok(validated) = parse_callback(body, DEFAULT_ACCOUNTCODE) else {
        let error = validate_callback(body, DEFAULT_ACCOUNTCODE)
            .expect_err("validate_callback and parse_callback agree");
        // The 400 detail names where the problem is: the body, or one of its top-level
        // fields (a seed field like `batch_id` may be named although absent).
        assert!(!error.reason.is_empty());
        if error.field != "body" {
            let in_payload = serde_json::from_slice::<serde_json::Value>(body)
                .is_ok_and(|payload| payload.get(&error.field).is_some());
            assert!(
                SEED_FIELDS.contains(&error.field.as_str()) || in_payload,
                "the error names {:?}, which is neither the body nor a field",
                error.field
            );
        }
        return;
    };
    let event = &validated.event;
    assert_storable(event);
    assert_json_without_nul(&validated.payload);
    assert_eq!(
        validate_callback(body, DEFAULT_ACCOUNTCODE).as_ref(),
        Ok(event),
        "validate_callback and parse_callback agree"
    );

    let reencoded = serde_json::to_vec(&validated.payload).expect("a Value serialises");
    let again = parse_callback(&reencoded, DEFAULT_ACCOUNTCODE)
        .expect("the payload of an accepted callback validates again");
    assert_eq!(
        &again, &validated,
        "validation depends on the JSON value only"
    );

    // Logs show a phone number with all but its last four characters hidden, and a
    // call id derived from one the same way.
    let digits: Vec<char> = event.phone_number.chars().collect();
    let expected_mask = match digits.len() {
        0..=4 => "****".to_owned(),
        n => format!("***{}", digits[n - 4..].iter().collect::<String>()),
    };
    assert_eq!(event.masked_phone(), expected_mask);
    if let Some(batch_id) = event.batch_id
        && event.call_id == derived_call_id(batch_id, &event.phone_number)
    {
        assert_eq!(
            event.loggable_call_id(),
            derived_call_id(batch_id, &expected_mask),
            "a derived call id is logged with the phone number masked"
        );
    }

    // Without a default account code, only a callback carrying its own is accepted,
    // and then with the same result.
    match validate_callback(body, "") {
        Ok(without_default) => assert_eq!(&without_default, event),
        Err(error) => assert_eq!(error.field, "accountcode"),
    }
});
