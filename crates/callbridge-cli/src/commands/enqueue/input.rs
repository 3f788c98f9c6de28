//! Reading a campaign CSV: header `phone_number` (any position, any case), every other
//! column becomes a key of `custom_data`. Numbers are normalised, invalid ones and
//! repeats are collected with their line numbers, and what remains is hashed so a
//! campaign can be identified by its content.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::phone::{PhoneError, normalise_phone};

/// The column that holds the numbers.
pub const PHONE_COLUMN: &str = "phone_number";
/// How many records pass between two progress updates.
const PROGRESS_EVERY: u64 = 16_384;
/// Postgres refuses U+0000 in `jsonb` (custom_data): caught here, with the line, rather
/// than as a COPY error that names neither.
const NUL_IN_CSV: &str = "a NUL character (which Postgres cannot store) is in";

/// A number that will be enqueued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignRow {
    /// Line of the CSV it came from (1 is the header).
    pub line: u64,
    pub phone_number: String,
    /// `custom_data` as JSON text, or `None` when the row's other cells are all empty.
    pub custom_data: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRow {
    pub line: u64,
    pub problem: PhoneError,
}

/// A repeat of a number already seen earlier in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuplicateRow {
    pub line: u64,
    pub first_line: u64,
}

#[derive(Debug, Default)]
pub struct CampaignFile {
    /// Data rows read (not counting the header).
    pub records: u64,
    pub rows: Vec<CampaignRow>,
    pub invalid: Vec<InvalidRow>,
    pub duplicates: Vec<DuplicateRow>,
    /// SHA-256 (hex) of the rows kept, normalised: the campaign's identity when it is
    /// not named. Reformatting numbers, reordering columns or adding repeats keeps it.
    pub content_sha256: String,
}

/// Reads and validates the whole file; `progress` is told how many bytes were read.
pub fn read_campaign(path: &Path, progress: &dyn Fn(u64)) -> anyhow::Result<CampaignFile> {
    let file = File::open(path).with_context(|| format!("while opening {}", path.display()))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        // Rows shorter than the header read as empty cells; longer ones are an error below.
        .flexible(true)
        .from_reader(BufReader::with_capacity(1 << 20, file));

    let headers: Vec<String> = reader
        .headers()
        .with_context(|| format!("while reading the header of {}", path.display()))?
        .iter()
        .map(|name| name.trim_start_matches('\u{feff}').trim().to_owned())
        .collect();
    if headers.iter().any(|name| name.contains('\0')) {
        bail!("{NUL_IN_CSV}: the header of {}", path.display());
    }
    let phone_index = phone_column(&headers)?;

    let mut campaign = CampaignFile::default();
    let mut first_seen: HashMap<String, u64> = HashMap::new();
    let mut hasher = Sha256::new();
    let mut record = csv::StringRecord::new();
    loop {
        let more = reader
            .read_record(&mut record)
            .with_context(|| format!("while reading {}", path.display()))?;
        if !more {
            break;
        }
        let line = record.position().map_or(0, csv::Position::line);
        if record.len() > headers.len() {
            bail!(
                "line {line} of {} has {} cells but the header names {} columns",
                path.display(),
                record.len(),
                headers.len()
            );
        }
        if record.iter().any(|cell| cell.contains('\0')) {
            bail!("{NUL_IN_CSV}: line {line} of {}", path.display());
        }
        campaign.records += 1;
        if campaign.records % PROGRESS_EVERY == 0 {
            progress(record.position().map_or(0, csv::Position::byte));
        }
        if record.iter().all(|cell| cell.trim().is_empty()) {
            // A blank line (or a row of empty cells) is not a number: skipped silently,
            // like the blank line most editors leave at the end of a file.
            campaign.records -= 1;
            continue;
        }

        let phone_number = match normalise_phone(record.get(phone_index).unwrap_or_default()) {
            Ok(phone_number) => phone_number,
            Err(problem) => {
                campaign.invalid.push(InvalidRow { line, problem });
                continue;
            }
        };
        if let Some(&first_line) = first_seen.get(&phone_number) {
            campaign.duplicates.push(DuplicateRow { line, first_line });
            continue;
        }
        first_seen.insert(phone_number.clone(), line);

        let custom_data = custom_data(&headers, phone_index, &record);
        hasher.update(phone_number.as_bytes());
        hasher.update([0]);
        hasher.update(custom_data.as_deref().unwrap_or("null").as_bytes());
        hasher.update([b'\n']);
        campaign.rows.push(CampaignRow {
            line,
            phone_number,
            custom_data,
        });
    }
    progress(reader.position().byte());
    campaign.content_sha256 = hex::encode(hasher.finalize());
    Ok(campaign)
}

fn phone_column(headers: &[String]) -> anyhow::Result<usize> {
    let matching: Vec<usize> = headers
        .iter()
        .enumerate()
        .filter(|(_, name)| name.eq_ignore_ascii_case(PHONE_COLUMN))
        .map(|(index, _)| index)
        .collect();
    match matching.as_slice() {
        [index] => Ok(*index),
        [] => bail!(
            "the CSV has no {PHONE_COLUMN} column (its header is: {}); the first line must name the columns",
            headers.join(", ")
        ),
        _ => bail!(
            "the CSV has {} columns named {PHONE_COLUMN}; keep one",
            matching.len()
        ),
    }
}

/// The row's other non-empty cells as a JSON object (keys sorted, so the text and the
/// content hash do not depend on column order), or `None` when there are none.
fn custom_data(
    headers: &[String],
    phone_index: usize,
    record: &csv::StringRecord,
) -> Option<String> {
    let object: Map<String, Value> = headers
        .iter()
        .zip(record.iter())
        .enumerate()
        .filter(|(index, (name, cell))| {
            *index != phone_index && !name.is_empty() && !cell.is_empty()
        })
        .map(|(_, (name, cell))| (name.clone(), Value::String(cell.to_owned())))
        .collect();
    (!object.is_empty()).then(|| Value::Object(object).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read(text: &str) -> anyhow::Result<CampaignFile> {
        let path = std::env::temp_dir().join(format!(
            "callbridge-enqueue-{}-{:?}.csv",
            std::process::id(),
            std::thread::current().id()
        ));
        File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let campaign = read_campaign(&path, &|_| {});
        std::fs::remove_file(&path).ok();
        campaign
    }

    #[test]
    fn other_columns_become_custom_data_and_empty_cells_are_left_out() {
        let campaign =
            read("customer_id,Phone_Number,segment\nC1,987-654-3210,gold\nC2,9876543211,\n,9876543212,\n")
                .unwrap();
        let rows: Vec<(u64, &str, Option<&str>)> = campaign
            .rows
            .iter()
            .map(|row| {
                (
                    row.line,
                    row.phone_number.as_str(),
                    row.custom_data.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (
                    2,
                    "9876543210",
                    Some(r#"{"customer_id":"C1","segment":"gold"}"#)
                ),
                (3, "9876543211", Some(r#"{"customer_id":"C2"}"#)),
                (4, "9876543212", None),
            ]
        );
    }

    #[test]
    fn invalid_and_repeated_numbers_are_reported_with_their_lines() {
        let campaign =
            read("phone_number\n9876543210\n12\n(987) 654 3210\nabc\n\n9876543211\n").unwrap();
        assert_eq!(campaign.records, 5);
        assert_eq!(campaign.rows.len(), 2);
        assert_eq!(
            campaign.invalid,
            [
                InvalidRow {
                    line: 3,
                    problem: PhoneError::TooFewDigits(2)
                },
                InvalidRow {
                    line: 5,
                    problem: PhoneError::UnexpectedCharacter
                },
            ]
        );
        assert_eq!(
            campaign.duplicates,
            [DuplicateRow {
                line: 4,
                first_line: 2
            }]
        );
    }

    #[test]
    fn the_content_hash_ignores_formatting_column_order_and_repeats() {
        let a = read("phone_number,tag\n987 654 3210,x\n9876543211,y\n").unwrap();
        let b =
            read("\u{feff}tag,phone_number\nx,9876543210\ny,987.654.3211\nx,9876543210\n").unwrap();
        let c = read("phone_number,tag\n9876543210,x\n9876543211,z\n").unwrap();
        assert_eq!(a.content_sha256, b.content_sha256);
        assert_ne!(a.content_sha256, c.content_sha256);
    }

    #[test]
    fn a_nul_character_is_refused_with_its_line() {
        let error = read("phone_number,note\n9876543210,a\n9876543211,a\0b\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("NUL") && error.contains("line 3 of "),
            "{error}"
        );
        let error = read("phone_number,no\0te\n9876543210,a\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("NUL") && error.contains("the header of "),
            "{error}"
        );
    }

    #[test]
    fn a_missing_phone_column_or_an_overlong_row_is_one_clear_error() {
        let error = read("number,name\n9876543210,a\n").unwrap_err().to_string();
        assert!(
            error.contains("no phone_number column (its header is: number, name)"),
            "{error}"
        );
        let error = read("phone_number,name\n9876543210,a,extra\n")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("line 2 of "), "{error}");
    }
}
