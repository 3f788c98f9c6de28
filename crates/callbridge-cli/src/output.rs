//! What the commands print: progress bars (only on a terminal), plain-text tables and
//! the one-line summaries of long lists.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar on stderr, drawn only when stderr is a terminal (scripts and CI see
/// nothing). Clones share the bar.
#[derive(Clone)]
pub struct Progress(ProgressBar);

impl Progress {
    fn new(total: u64, template: &str, verb: &str) -> Progress {
        let bar = if console::Term::stderr().is_term() {
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        bar.set_message(verb.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress(bar)
    }

    /// Counts bytes of a file.
    pub fn bytes(total: u64, verb: &str) -> Progress {
        Progress::new(
            total,
            "{msg:>8} [{bar:40}] {bytes}/{total_bytes} ({eta})",
            verb,
        )
    }

    /// Counts items.
    pub fn count(total: u64, verb: &str) -> Progress {
        Progress::new(total, "{msg:>8} [{bar:40}] {pos}/{len} ({eta})", verb)
    }

    pub fn set(&self, position: u64) {
        self.0.set_position(position);
    }

    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// `2, 5, 9` or `2, 5, 9, … (12 in all)` for a list of line numbers.
pub fn count_lines(lines: &[u64], shown: usize) -> String {
    let listed: Vec<String> = lines.iter().take(shown).map(u64::to_string).collect();
    let noun = if lines.len() == 1 { "line" } else { "lines" };
    if lines.len() > shown {
        format!("{noun} {}, … ({} in all)", listed.join(", "), lines.len())
    } else {
        format!("{noun} {}", listed.join(", "))
    }
}

/// A left-aligned text table with a header row; columns as wide as their widest cell,
/// two spaces apart, no borders (easy to read and to `grep`/`awk`).
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_header(header)
        .add_rows(rows);
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    format!("{}\n", table.trim_fmt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_to_the_widest_cell() {
        let table = render_table(
            &["BATCH", "STATUS"],
            &[
                vec!["1".into(), "completed".into()],
                vec!["1000".into(), "pending".into()],
            ],
        );
        assert_eq!(table, "BATCH  STATUS\n1      completed\n1000   pending\n");
    }

    #[test]
    fn long_line_lists_are_cut_with_a_count() {
        assert_eq!(count_lines(&[4], 3), "line 4");
        assert_eq!(count_lines(&[2, 5, 9], 3), "lines 2, 5, 9");
        assert_eq!(
            count_lines(&[2, 5, 9, 11], 3),
            "lines 2, 5, 9, … (4 in all)"
        );
    }
}
