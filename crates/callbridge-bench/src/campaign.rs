//! The stage-5 campaign: `numbers` distinct valid phone numbers with two custom columns,
//! as a CSV for `callbridge enqueue` and as the `local_call_queue` COPY lines that
//! enqueue makes of that CSV (for the raw limits 1c and 1d, which load the same rows).

use std::io::Write as _;
use std::path::Path;

use anyhow::Context;

/// The columns `callbridge enqueue` COPYs into, in its order.
pub const QUEUE_COPY_COLUMNS: &str =
    "phone_number, batch_id, custom_data, queue_status, retry_count, campaign_key";

/// Numbers per batch, as `callbridge enqueue` makes them by default.
pub const BATCH_SIZE: usize = 500;

/// The `i`-th row: phone number, customer id, segment.
fn row(i: usize) -> (String, String, &'static str) {
    (
        format!("97{:08}", i % 100_000_000),
        format!("CUST{i:07}"),
        "gold",
    )
}

/// Writes the campaign CSV (`phone_number,customer_id,segment`).
pub fn write_csv(path: &Path, numbers: usize) -> anyhow::Result<()> {
    let file = std::fs::File::create(path)
        .with_context(|| format!("while creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    writeln!(out, "phone_number,customer_id,segment")?;
    for i in 0..numbers {
        let (phone, customer, segment) = row(i);
        writeln!(out, "{phone},{customer},{segment}")?;
    }
    out.flush()
        .with_context(|| format!("while writing {}", path.display()))
}

/// The rows as COPY text-format lines for [`QUEUE_COPY_COLUMNS`], as enqueue writes them:
/// batches of [`BATCH_SIZE`] from `first_batch_id` on, `custom_data` the other columns
/// as a JSON object with sorted keys, `pending`, no retries, `campaign_key`.
pub fn copy_lines(numbers: usize, first_batch_id: i32, campaign_key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(numbers * 96);
    for i in 0..numbers {
        let (phone, customer, segment) = row(i);
        let batch_id = first_batch_id + (i / BATCH_SIZE) as i32;
        writeln!(
            out,
            "{phone}\t{batch_id}\t{{\"customer_id\":\"{customer}\",\"segment\":\"{segment}\"}}\tpending\t0\t{campaign_key}"
        )
        .expect("writing into a Vec cannot fail");
    }
    out
}

/// Batches [`copy_lines`] fills.
pub fn batches(numbers: usize) -> usize {
    numbers.div_ceil(BATCH_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_lines_fill_batches_of_500_with_the_csv_rows() {
        let text = String::from_utf8(copy_lines(501, 7, "bench")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 501);
        assert_eq!(
            lines[0],
            "9700000000\t7\t{\"customer_id\":\"CUST0000000\",\"segment\":\"gold\"}\tpending\t0\tbench"
        );
        assert!(lines[499].starts_with("9700000499\t7\t"));
        assert!(lines[500].starts_with("9700000500\t8\t"));
        assert_eq!(batches(501), 2);
        let json: serde_json::Value =
            serde_json::from_str(lines[0].split('\t').nth(2).unwrap()).unwrap();
        assert_eq!(json["customer_id"], "CUST0000000");
    }

    #[test]
    fn the_csv_has_the_same_rows() {
        let path =
            std::env::temp_dir().join(format!("cbbench-campaign-{}.csv", std::process::id()));
        write_csv(&path, 2).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            text,
            "phone_number,customer_id,segment\n9700000000,CUST0000000,gold\n9700000001,CUST0000001,gold\n"
        );
    }
}
