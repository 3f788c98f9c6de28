//! The CSV importer of `callbridge enqueue` on arbitrary files, and its phone
//! number normalisation on arbitrary cells.
//!
//! Beyond "never panics": every line is accounted for (kept, invalid or a repeat),
//! every kept row is storable in `local_call_queue` as is, and normalisation is
//! idempotent, so a number enqueued once is recognised when enqueued again.
#![no_main]

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use callbridge_cli::commands::enqueue::read_campaign;
use callbridge_fuzz::assert_json_without_nul;
use callbridge_runtime::config::NumbersConfig;
use callbridge_types::event::limits::PHONE_NUMBER_CHARS;
use callbridge_types::phone::{Region, SendForm, normalise};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// `read_campaign` reads a path (it streams files of millions of rows), so each input
/// is written to one scratch file per fuzzing process, in memory where possible.
fn scratch_file() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        let dir = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("callbridge-fuzz-csv-{}.csv", std::process::id()))
    })
}

/// The defaults: region IN, national form.
fn settings() -> NumbersConfig {
    NumbersConfig {
        default_region: Region::parse("IN").ok(),
        send_form: SendForm::National,
    }
}

fuzz_target!(|bytes: &[u8]| {
    phone_normalisation_is_idempotent_and_fits(&String::from_utf8_lossy(bytes));
    let path = scratch_file();
    std::fs::write(path, bytes).expect("the scratch file is writable");
    let Ok(campaign) = read_campaign(path, settings(), &|_| {}) else {
        return;
    };

    assert_eq!(
        campaign.rows.len() + campaign.invalid.len() + campaign.duplicates.len(),
        usize::try_from(campaign.records).unwrap(),
        "every data line is kept, invalid or a repeat"
    );
    assert_eq!(campaign.content_sha256.len(), 64);
    let mut numbers = HashSet::new();
    // Only "never backwards": csv 1.4 counts lines by LF alone, so a record after a CRLF
    // reads one line short (BurntSushi/rust-csv#395) and records separated by a lone CR
    // share a line number.
    let mut previous_line = 0;
    for row in &campaign.rows {
        assert!(row.line >= previous_line, "rows keep file order");
        previous_line = row.line;
        let e164 = normalise(&row.phone_e164, None).expect("the stored E.164 form normalises");
        assert_eq!(
            e164.as_str(),
            row.phone_e164,
            "a stored number is already normalised"
        );
        assert_eq!(
            normalise(&row.phone_number, settings().default_region).as_ref(),
            Ok(&e164),
            "the number sent is the same number"
        );
        assert!(row.phone_number.chars().count() <= PHONE_NUMBER_CHARS);
        assert!(numbers.insert(&row.phone_e164), "a repeat was kept");
        if let Some(custom_data) = &row.custom_data {
            let value: Value = serde_json::from_str(custom_data).expect("custom_data is JSON text");
            let Value::Object(object) = &value else {
                panic!("custom_data is not a JSON object");
            };
            assert!(!object.is_empty(), "an empty custom_data is stored as NULL");
            // Postgres refuses U+0000 in JSONB: such a row would fail the whole COPY.
            assert_json_without_nul(&value);
        }
    }
    for duplicate in &campaign.duplicates {
        assert!(duplicate.first_line <= duplicate.line);
    }
});

fn phone_normalisation_is_idempotent_and_fits(cell: &str) {
    if let Ok(number) = normalise(cell, settings().default_region) {
        let text = number.as_str();
        assert_eq!(normalise(text, None).as_ref(), Ok(&number));
        assert!(text.chars().count() <= PHONE_NUMBER_CHARS);
        assert!(text.starts_with('+'));
        assert!(text[1..].bytes().all(|b| b.is_ascii_digit()));
    }
}
