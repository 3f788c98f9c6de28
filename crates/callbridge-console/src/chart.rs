//! Charts drawn on the server as SVG: no script draws them, so they read without
//! JavaScript, and every label goes through maud (escaped) like the rest of the page.

use maud::{Markup, html};

/// One stacked series: its name in the legend and the CSS class that colours it.
pub struct Series<'a> {
    pub label: &'a str,
    pub class: &'a str,
}

/// One bar: its label (a time) and one value per series, in the series' order.
pub struct Column {
    pub label: String,
    pub values: Vec<i64>,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
/// Room for the y axis' figures on the left and the time labels below.
const LEFT: f64 = 44.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 24.0;

/// The smallest of 1, 2, 5 × 10ⁿ at or above `value` (at least 1): the top of the scale,
/// so the axis reads in round figures.
pub fn nice_ceiling(value: i64) -> i64 {
    let mut magnitude = 1_i64;
    loop {
        for step in [1, 2, 5] {
            let candidate = step * magnitude;
            if candidate >= value {
                return candidate;
            }
        }
        magnitude = magnitude.saturating_mul(10);
    }
}

fn number(value: f64) -> String {
    format!("{value:.2}")
}

/// Stacked bars, one per column, each series a coloured part of its height; the y axis
/// from 0 to the [`nice_ceiling`] of the tallest bar. Every part carries a `title` with its
/// figure, and the legend gives each series' total as text, so nothing depends on colour.
/// `caption` names the chart for screen readers.
pub fn stacked_bars(caption: &str, series: &[Series<'_>], columns: &[Column]) -> Markup {
    let tallest = columns
        .iter()
        .map(|column| column.values.iter().map(|value| value.max(&0)).sum::<i64>())
        .max()
        .unwrap_or(0);
    let top = nice_ceiling(tallest);
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let slot = plot_width / columns.len().max(1) as f64;
    let bar = (slot * 0.8).max(1.0);
    let scale = plot_height / top as f64;
    let totals: Vec<i64> = (0..series.len())
        .map(|index| {
            columns
                .iter()
                .map(|column| column.values.get(index).copied().unwrap_or(0).max(0))
                .sum()
        })
        .collect();
    // Time labels under the first, middle and last bars only: they stay legible however
    // many bars there are.
    let labelled =
        |index: usize| index == 0 || index + 1 == columns.len() || index == columns.len() / 2;
    html! {
        svg class="chart" viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) width=(WIDTH) height=(HEIGHT)
            role="img" aria-label=(caption) data-buckets=(columns.len()) data-scale-top=(top) {
            line class="axis" x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(HEIGHT - BOTTOM) {}
            line class="axis" x1=(LEFT) y1=(HEIGHT - BOTTOM) x2=(WIDTH - RIGHT) y2=(HEIGHT - BOTTOM) {}
            line class="grid" x1=(LEFT) y1=(TOP) x2=(WIDTH - RIGHT) y2=(TOP) {}
            line class="grid" x1=(LEFT) y1=(number(TOP + plot_height / 2.0)) x2=(WIDTH - RIGHT) y2=(number(TOP + plot_height / 2.0)) {}
            text class="tick" x=(LEFT - 4.0) y=(TOP + 4.0) text-anchor="end" { (top) }
            text class="tick" x=(LEFT - 4.0) y=(number(TOP + plot_height / 2.0 + 4.0)) text-anchor="end" {
                @if top % 2 == 0 { (top / 2) } @else { (format!("{:.1}", top as f64 / 2.0)) }
            }
            text class="tick" x=(LEFT - 4.0) y=(HEIGHT - BOTTOM + 4.0) text-anchor="end" { "0" }
            @for (index, column) in columns.iter().enumerate() {
                @let x = LEFT + slot * index as f64 + (slot - bar) / 2.0;
                g class="bucket" data-label=(column.label) data-total=(column.values.iter().map(|value| value.max(&0)).sum::<i64>()) {
                    @let mut base = HEIGHT - BOTTOM;
                    @for (style, value) in series.iter().zip(&column.values) {
                        @if *value > 0 {
                            @let height = *value as f64 * scale;
                            @let y = { base -= height; base };
                            rect class=(style.class) x=(number(x)) y=(number(y)) width=(number(bar)) height=(number(height)) {
                                title { (column.label) " · " (style.label) ": " (value) }
                            }
                        }
                    }
                    @if labelled(index) {
                        // The first and last labels end inside the chart, not past its edge.
                        @let anchor = if index == 0 { "start" } else if index + 1 == columns.len() { "end" } else { "middle" };
                        @let at = match anchor { "start" => x, "end" => x + bar, _ => x + bar / 2.0 };
                        text class="time" x=(number(at)) y=(HEIGHT - 6.0) text-anchor=(anchor) { (column.label) }
                    }
                }
            }
        }
        ul class="legend" {
            @for (style, total) in series.iter().zip(&totals) {
                li { span class={ "swatch " (style.class) } {} (style.label) " " (total) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERIES: &[Series<'static>] = &[
        Series {
            label: "answered",
            class: "reached",
        },
        Series {
            label: "busy",
            class: "busy",
        },
    ];

    #[test]
    fn the_scale_tops_at_a_round_figure_at_or_above_the_tallest_bar() {
        assert_eq!(nice_ceiling(0), 1);
        assert_eq!(nice_ceiling(1), 1);
        assert_eq!(nice_ceiling(3), 5);
        assert_eq!(nice_ceiling(7), 10);
        assert_eq!(nice_ceiling(11), 20);
        assert_eq!(nice_ceiling(200), 200);
        assert_eq!(nice_ceiling(201), 500);
    }

    #[test]
    fn each_bucket_is_a_bar_whose_parts_stack_in_proportion_to_the_scale() {
        let columns = vec![
            Column {
                label: "09:00".into(),
                values: vec![6, 2],
            },
            Column {
                label: "09:01".into(),
                values: vec![0, 0],
            },
            Column {
                label: "09:02".into(),
                values: vec![3, 0],
            },
        ];
        let svg = stacked_bars("outcomes", SERIES, &columns).into_string();
        // Three buckets, the tallest (8) under a scale topped at 10.
        assert_eq!(svg.matches(r#"<g class="bucket""#).count(), 3, "{svg}");
        assert!(svg.contains(r#"data-buckets="3""#));
        assert!(svg.contains(r#"data-scale-top="10""#));
        // The plot is 186 high and 668 wide: 6 of 10 is 111.6 high from the bottom (y 196),
        // in the first of three slots, 80 % of its width.
        assert!(
            svg.contains(r#"class="reached" x="66.27" y="84.40" width="178.13" height="111.60""#),
            "{svg}"
        );
        // Busy stacks on answered.
        assert!(
            svg.contains(r#"class="busy" x="66.27" y="47.20" width="178.13" height="37.20""#),
            "{svg}"
        );
        // An empty bucket draws no part, but is there.
        assert!(svg.contains(r#"data-label="09:01" data-total="0""#));
        assert!(svg.contains("09:00 · answered: 6"));
        // The legend gives the totals as text.
        assert!(svg.contains("answered 9"));
        assert!(svg.contains("busy 2"));
    }

    #[test]
    fn labels_are_escaped_and_never_become_markup() {
        let hostile = r#"<script>alert(1)</script>"><img src=x onerror=alert(2)>"#;
        let series = [Series {
            label: hostile,
            class: "failed",
        }];
        let columns = vec![Column {
            label: hostile.to_owned(),
            values: vec![1],
        }];
        let svg = stacked_bars(hostile, &series, &columns).into_string();
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(!svg.contains("<img"), "{svg}");
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(svg.contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"));
    }
}
