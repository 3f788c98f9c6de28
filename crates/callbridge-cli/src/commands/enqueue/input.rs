//! Reading a campaign CSV: header `phone_number` (any position, any case), every other
//! column becomes a key of `custom_data`. An optional `timezone` column gives a row its
//! own IANA zone for the campaign's calling window (it stays in `custom_data` too). Numbers
//! are normalised to E.164 (`callbridge_types::phone`, with the configured default region)
//! and kept in the form sent to the API beside it; invalid ones and repeats (the same
//! E.164 number, however it was typed) are collected with their line numbers, and what
//! remains is hashed so a campaign can be identified by its content.
//!
//! The reader streams: each kept row is handed on as it is read and then forgotten, so a
//! file of millions of rows needs memory only for what it has to remember: the numbers
//! already seen, each as one integer (see [`E164::key`]), and the problem lines.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use callbridge_runtime::config::{NumbersConfig, setting_name};
use callbridge_types::campaign::parse_time_zone;
use callbridge_types::phone::{E164, RefusedNumber, normalise};
use sha2::{Digest, Sha256};

/// The column that holds the numbers.
pub const PHONE_COLUMN: &str = "phone_number";
/// The optional column that holds a row's own time zone.
pub const TIME_ZONE_COLUMN: &str = "timezone";
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
    /// The form sent to the API (`CALLBRIDGE__NUMBERS__SEND_FORM`).
    pub phone_number: String,
    pub phone_e164: String,
    /// `custom_data` as JSON text, or `None` when the row's other cells are all empty.
    pub custom_data: Option<String>,
    /// The row's own IANA zone (its `timezone` cell), or `None`: the campaign's.
    pub time_zone: Option<String>,
}

/// A [`CampaignRow`] borrowed from the reader's buffers, valid while it is handed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptRow<'a> {
    pub line: u64,
    /// The form sent to the API.
    pub phone_number: &'a str,
    pub phone_e164: &'a E164,
    pub custom_data: Option<&'a str>,
    /// The zone's canonical name.
    pub time_zone: Option<&'a str>,
}

impl KeptRow<'_> {
    pub fn to_owned(self) -> CampaignRow {
        CampaignRow {
            line: self.line,
            phone_number: self.phone_number.to_owned(),
            phone_e164: self.phone_e164.as_str().to_owned(),
            custom_data: self.custom_data.map(str::to_owned),
            time_zone: self.time_zone.map(str::to_owned),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRow {
    pub line: u64,
    pub problem: RowProblem,
}

/// Why a row cannot be enqueued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowProblem {
    Phone(RefusedNumber),
    /// A valid number of another country than the default region's, which the national
    /// form cannot carry (it would reach a number of the default region instead): the
    /// country calling code.
    OtherCountry(u16),
    /// Its `timezone` cell is not an IANA zone name (the cell, which is no personal data).
    TimeZone(String),
}

impl RowProblem {
    pub fn is_phone(&self) -> bool {
        matches!(self, RowProblem::Phone(_) | RowProblem::OtherCountry(_))
    }
}

impl std::fmt::Display for RowProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowProblem::Phone(problem) => write!(f, "invalid phone_number: {problem}"),
            RowProblem::OtherCountry(code) => write!(
                f,
                "invalid phone_number: a number of country +{code}, which the national form cannot carry ({} is national); send e164 instead",
                setting_name("numbers.send_form")
            ),
            RowProblem::TimeZone(cell) => write!(
                f,
                "invalid {TIME_ZONE_COLUMN} {cell:?}: not an IANA zone name (for example America/New_York or Asia/Kolkata)"
            ),
        }
    }
}

/// A repeat of a number already seen earlier in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuplicateRow {
    pub line: u64,
    pub first_line: u64,
}

/// What reading a file found, apart from the kept rows themselves.
#[derive(Debug, Default)]
pub struct CampaignScan {
    /// Data rows read (not counting the header).
    pub records: u64,
    pub invalid: Vec<InvalidRow>,
    pub duplicates: Vec<DuplicateRow>,
    /// SHA-256 (hex) of the rows kept, normalised: the campaign's identity when it is
    /// not named. Reformatting numbers, reordering columns or adding repeats keeps it.
    pub content_sha256: String,
}

impl CampaignScan {
    /// Whether a second reading of a file found what the first did: the same kept rows
    /// (their hash), the same invalid lines and as many records.
    pub fn reads_like(&self, first: &CampaignScan) -> bool {
        self.records == first.records
            && self.invalid == first.invalid
            && self.content_sha256 == first.content_sha256
    }
}

/// A whole file in memory: for tests and fuzzing. `enqueue` streams with
/// [`CampaignReader`] instead.
#[derive(Debug, Default)]
pub struct CampaignFile {
    /// Data rows read (not counting the header).
    pub records: u64,
    pub rows: Vec<CampaignRow>,
    pub invalid: Vec<InvalidRow>,
    pub duplicates: Vec<DuplicateRow>,
    /// See [`CampaignScan::content_sha256`].
    pub content_sha256: String,
}

/// Reads and validates the whole file into memory; `progress` is told how many bytes were
/// read.
pub fn read_campaign(
    path: &Path,
    numbers: NumbersConfig,
    progress: &dyn Fn(u64),
) -> anyhow::Result<CampaignFile> {
    let mut rows = Vec::new();
    let scan = CampaignReader::open(path, numbers)?.read(progress, &mut |row| {
        rows.push(row.to_owned());
        Ok(())
    })?;
    Ok(CampaignFile {
        records: scan.records,
        rows,
        invalid: scan.invalid,
        duplicates: scan.duplicates,
        content_sha256: scan.content_sha256,
    })
}

/// A campaign file whose header has been read and checked.
pub struct CampaignReader {
    path: PathBuf,
    reader: csv::Reader<BufReader<File>>,
    header_columns: usize,
    phone_index: usize,
    time_zone_index: Option<usize>,
    custom_columns: CustomColumns,
    numbers: NumbersConfig,
}

impl CampaignReader {
    /// Opens the file and reads its header, so a file without a `phone_number` column is
    /// refused before anything else happens.
    pub fn open(path: &Path, numbers: NumbersConfig) -> anyhow::Result<CampaignReader> {
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
        // The last `timezone` column, as custom_data keeps the last non-empty cell of
        // columns that share a name.
        let time_zone_index = headers
            .iter()
            .rposition(|name| name.eq_ignore_ascii_case(TIME_ZONE_COLUMN));
        Ok(CampaignReader {
            path: path.to_owned(),
            reader,
            header_columns: headers.len(),
            phone_index,
            time_zone_index,
            custom_columns: CustomColumns::new(&headers, phone_index),
            numbers,
        })
    }

    /// Reads every data line, handing each kept row to `keep` in file order; `progress` is
    /// told how many bytes were read. An error from `keep` stops the reading.
    pub fn read(
        mut self,
        progress: &dyn Fn(u64),
        keep: &mut dyn FnMut(KeptRow<'_>) -> anyhow::Result<()>,
    ) -> anyhow::Result<CampaignScan> {
        let path = self.path.display();
        let mut scan = CampaignScan::default();
        let mut first_seen: HashMap<u64, u64> = HashMap::new();
        let mut hasher = Sha256::new();
        let mut record = csv::StringRecord::new();
        let mut json = Vec::new();
        loop {
            let more = self
                .reader
                .read_record(&mut record)
                .with_context(|| format!("while reading {path}"))?;
            if !more {
                break;
            }
            let line = record.position().map_or(0, csv::Position::line);
            if record.len() > self.header_columns {
                bail!(
                    "line {line} of {path} has {} cells but the header names {} columns",
                    record.len(),
                    self.header_columns
                );
            }
            if record.iter().any(|cell| cell.contains('\0')) {
                bail!("{NUL_IN_CSV}: line {line} of {path}");
            }
            scan.records += 1;
            if scan.records % PROGRESS_EVERY == 0 {
                progress(record.position().map_or(0, csv::Position::byte));
            }
            if record.iter().all(|cell| cell.trim().is_empty()) {
                // A blank line (or a row of empty cells) is not a number: skipped silently,
                // like the blank line most editors leave at the end of a file.
                scan.records -= 1;
                continue;
            }

            let raw = record.get(self.phone_index).unwrap_or_default();
            let e164 = match normalise(raw, self.numbers.default_region) {
                Ok(e164) => e164,
                Err(problem) => {
                    scan.invalid.push(InvalidRow {
                        line,
                        problem: RowProblem::Phone(problem),
                    });
                    continue;
                }
            };
            let Some(phone_number) =
                e164.sent_form(self.numbers.send_form, self.numbers.default_region)
            else {
                scan.invalid.push(InvalidRow {
                    line,
                    problem: RowProblem::OtherCountry(e164.calling_code()),
                });
                continue;
            };
            let time_zone = match self
                .time_zone_index
                .and_then(|index| record.get(index))
                .map(str::trim)
                .filter(|cell| !cell.is_empty())
            {
                None => None,
                Some(cell) => match parse_time_zone(cell) {
                    Ok(zone) => Some(zone.name()),
                    Err(_) => {
                        scan.invalid.push(InvalidRow {
                            line,
                            problem: RowProblem::TimeZone(cell.to_owned()),
                        });
                        continue;
                    }
                },
            };
            match first_seen.entry(e164.key()) {
                Entry::Occupied(first) => {
                    scan.duplicates.push(DuplicateRow {
                        line,
                        first_line: *first.get(),
                    });
                    continue;
                }
                Entry::Vacant(slot) => {
                    slot.insert(line);
                }
            }

            let custom_data = self
                .custom_columns
                .write_json(&record, &mut json)
                .then(|| std::str::from_utf8(&json).expect("serde_json writes UTF-8"));
            hasher.update(phone_number.as_bytes());
            hasher.update([0]);
            hasher.update(custom_data.unwrap_or("null").as_bytes());
            hasher.update([b'\n']);
            keep(KeptRow {
                line,
                phone_number,
                phone_e164: &e164,
                custom_data,
                time_zone,
            })?;
        }
        progress(self.reader.position().byte());
        scan.content_sha256 = hex::encode(hasher.finalize());
        Ok(scan)
    }
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

/// The columns that become `custom_data`: every named column but the phone number's,
/// as JSON object keys sorted by name, so the text (and the content hash) does not depend
/// on column order. Columns that share a name are one key, whose value is the last
/// non-empty cell among them.
struct CustomColumns(Vec<CustomKey>);

struct CustomKey {
    /// The name as a JSON string followed by `:`, encoded once for the whole file.
    json_name: String,
    /// The columns with this name, in file order.
    columns: Vec<usize>,
}

impl CustomColumns {
    fn new(headers: &[String], phone_index: usize) -> CustomColumns {
        let mut by_name: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (index, name) in headers.iter().enumerate() {
            if index != phone_index && !name.is_empty() {
                by_name.entry(name).or_default().push(index);
            }
        }
        CustomColumns(
            by_name
                .into_iter()
                .map(|(name, columns)| CustomKey {
                    json_name: format!("{}:", serde_json::Value::from(name)),
                    columns,
                })
                .collect(),
        )
    }

    /// Writes the row's non-empty cells into `json` (cleared first) as a JSON object;
    /// false when there are none (custom_data is then NULL, not `{}`).
    fn write_json(&self, record: &csv::StringRecord, json: &mut Vec<u8>) -> bool {
        json.clear();
        for key in &self.0 {
            let Some(cell) = key
                .columns
                .iter()
                .rev()
                .filter_map(|&index| record.get(index))
                .find(|cell| !cell.is_empty())
            else {
                continue;
            };
            json.push(if json.is_empty() { b'{' } else { b',' });
            json.extend_from_slice(key.json_name.as_bytes());
            serde_json::to_writer(&mut *json, cell).expect("writing JSON into a Vec cannot fail");
        }
        if json.is_empty() {
            return false;
        }
        json.push(b'}');
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn india() -> NumbersConfig {
        NumbersConfig {
            default_region: Some(callbridge_types::phone::Region::parse("IN").unwrap()),
            send_form: callbridge_types::phone::SendForm::National,
        }
    }

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
        let campaign = read_campaign(&path, india(), &|_| {});
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
    fn custom_data_is_the_json_a_map_of_the_cells_would_give() {
        // Columns sharing a name keep the last non-empty cell, as a map filled cell by cell
        // would; names and values are escaped as JSON; short rows read as empty cells.
        let campaign = read(concat!(
            "b,\"na\"\"me\",phone_number,b,,a\\z\n",
            "1,\"q\"\"\n\ttab\",9876543210,2,x,é\n",
            "1,,9876543211,,y\n",
            ",,9876543212\n",
        ))
        .unwrap();
        let custom_data: Vec<Option<&str>> = campaign
            .rows
            .iter()
            .map(|row| row.custom_data.as_deref())
            .collect();
        assert_eq!(
            custom_data,
            [
                Some(r#"{"a\\z":"é","b":"2","na\"me":"q\"\n\ttab"}"#),
                Some(r#"{"b":"1"}"#),
                None,
            ]
        );
        let first: serde_json::Value = serde_json::from_str(custom_data[0].unwrap()).unwrap();
        assert_eq!(
            first,
            serde_json::json!({"a\\z": "é", "b": "2", "na\"me": "q\"\n\ttab"})
        );
    }

    #[test]
    fn a_timezone_column_gives_a_row_its_own_zone_and_an_unknown_zone_is_invalid() {
        let campaign = read(concat!(
            "phone_number,TimeZone\n",
            "9876543210,America/New_York\n",
            "9876543211,\n",
            "9876543212,Mars/Olympus\n",
            "9876543213, Asia/Kolkata \n",
        ))
        .unwrap();
        let zones: Vec<(u64, Option<&str>)> = campaign
            .rows
            .iter()
            .map(|row| (row.line, row.time_zone.as_deref()))
            .collect();
        assert_eq!(
            zones,
            [
                (2, Some("America/New_York")),
                (3, None),
                (5, Some("Asia/Kolkata"))
            ]
        );
        assert_eq!(
            campaign.invalid,
            [InvalidRow {
                line: 4,
                problem: RowProblem::TimeZone("Mars/Olympus".into())
            }]
        );
        assert_eq!(
            campaign.invalid[0].problem.to_string(),
            "invalid timezone \"Mars/Olympus\": not an IANA zone name (for example America/New_York or Asia/Kolkata)"
        );
        // The cell stays in custom_data, as any other column.
        assert_eq!(
            campaign.rows[0].custom_data.as_deref(),
            Some(r#"{"TimeZone":"America/New_York"}"#)
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
                    problem: RowProblem::Phone(RefusedNumber::NotValid("+91".into()))
                },
                InvalidRow {
                    line: 5,
                    problem: RowProblem::Phone(RefusedNumber::UnexpectedCharacter)
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
    fn a_number_typed_two_ways_is_one_number_and_the_national_form_keeps_to_its_region() {
        let campaign =
            read("phone_number\n+91 98765 43210\n098765-43210\n+44 20 7183 8750\n").unwrap();
        assert_eq!(campaign.rows.len(), 1);
        assert_eq!(campaign.rows[0].phone_number, "9876543210");
        assert_eq!(campaign.rows[0].phone_e164, "+919876543210");
        assert_eq!(
            campaign.duplicates,
            [DuplicateRow {
                line: 3,
                first_line: 2
            }]
        );
        assert_eq!(
            campaign.invalid,
            [InvalidRow {
                line: 4,
                problem: RowProblem::OtherCountry(44)
            }]
        );
        assert!(
            campaign.invalid[0]
                .problem
                .to_string()
                .contains("CALLBRIDGE__NUMBERS__SEND_FORM")
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
