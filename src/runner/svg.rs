//! Inline SVG charts for the HTML run report: a histogram, horizontal bars
//! and a line chart. Plain strings, no scripts, well-formed XML.

use std::fmt::Write as _;

use super::story::{Histogram, number};

/// Escapes text for HTML and XML (text and attribute values).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Segment colours, in map order.
pub const PALETTE: &[&str] = &[
    "#4daf4a", "#a6d96a", "#d9ef8b", "#66c2a5", "#abdda4", "#fee08b", "#fdae61", "#f46d43", "#e7298a", "#bababa",
    "#d9d9d9", "#8da0cb", "#e78ac3", "#a6cee3",
];

const W: f64 = 480.0;

fn open(h: f64, label: &str) -> String {
    format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {h}\" width=\"{W}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">",
        esc(label)
    )
}

/// A histogram: bins as vertical bars, the range and the largest count on
/// the axes.
pub fn histogram(h: &Histogram) -> String {
    let (height, left, bottom, top) = (220.0, 56.0, 34.0, 12.0);
    let plot_w = W - left - 12.0;
    let plot_h = height - bottom - top;
    let most = h.bins.iter().copied().max().unwrap_or(0).max(1) as f64;
    let mut s = open(height, &format!("histogram of {}", h.column));
    let bw = plot_w / h.bins.len().max(1) as f64;
    for (i, &n) in h.bins.iter().enumerate() {
        let bh = plot_h * n as f64 / most;
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#4575b4\"><title>{}</title></rect>",
            left + i as f64 * bw + 0.5,
            top + plot_h - bh,
            (bw - 1.0).max(0.5),
            bh,
            n
        );
    }
    axes(&mut s, left, top, plot_w, plot_h);
    let y0 = top + plot_h;
    let _ = write!(
        s,
        "<text x=\"{left}\" y=\"{:.1}\" class=\"tick\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"middle\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"end\">{}</text>",
        y0 + 16.0,
        esc(&number(h.min)),
        left + plot_w / 2.0,
        y0 + 16.0,
        esc(&number((h.min + h.max) / 2.0)),
        left + plot_w,
        y0 + 16.0,
        esc(&number(h.max)),
    );
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"end\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"end\">0</text>",
        left - 6.0,
        top + 10.0,
        most as u64,
        left - 6.0,
        y0
    );
    s.push_str("</svg>");
    s
}

fn axes(s: &mut String, left: f64, top: f64, w: f64, h: f64) {
    let _ = write!(
        s,
        "<path d=\"M{left} {top} V{:.1} H{:.1}\" fill=\"none\" stroke=\"#444\" stroke-width=\"1\" />",
        top + h,
        left + w
    );
}

/// Horizontal bars with their labels and values; `colors` per bar.
pub fn bars(title: &str, labels: &[String], values: &[f64], colors: &[&str]) -> String {
    let row = 22.0;
    let (left, right) = (180.0, 90.0);
    let height = row * labels.len() as f64 + 10.0;
    let most = values.iter().copied().fold(0.0f64, f64::max);
    let mut s = open(height, title);
    for (i, (label, &v)) in labels.iter().zip(values).enumerate() {
        let y = 5.0 + i as f64 * row;
        let w = if most > 0.0 { (W - left - right) * v / most } else { 0.0 };
        let color = colors.get(i % colors.len().max(1)).copied().unwrap_or("#4575b4");
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"label\" text-anchor=\"end\">{}</text><rect x=\"{left}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{color}\" /><text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\">{}</text>",
            left - 8.0,
            y + 15.0,
            esc(label),
            row - 6.0,
            left + w + 6.0,
            y + 15.0,
            esc(&number(v))
        );
    }
    s.push_str("</svg>");
    s
}

/// A line chart of one or more series over shared x positions, labelled
/// by `x_labels`; missing points are skipped.
pub fn lines(title: &str, x_labels: &[String], series: &[(String, Vec<Option<f64>>)], y_name: &str) -> String {
    let (height, left, bottom, top, right) = (240.0, 64.0, 40.0, 14.0, 150.0);
    let plot_w = W - left - right;
    let plot_h = height - bottom - top;
    let all: Vec<f64> = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().copied())
        .filter(|v| v.is_finite())
        .collect();
    let mut s = open(height, title);
    if all.is_empty() || x_labels.is_empty() {
        s.push_str("<text x=\"20\" y=\"40\" class=\"tick\">no values</text></svg>");
        return s;
    }
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).min(0.0);
    let mut hi = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if hi <= lo {
        hi = lo + 1.0;
    }
    let n = x_labels.len();
    let x_at = |i: usize| {
        if n == 1 {
            left + plot_w / 2.0
        } else {
            left + plot_w * i as f64 / (n - 1) as f64
        }
    };
    let y_at = |v: f64| top + plot_h - plot_h * (v - lo) / (hi - lo);
    axes(&mut s, left, top, plot_w, plot_h);
    for (i, l) in x_labels.iter().enumerate() {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"middle\">{}</text>",
            x_at(i),
            top + plot_h + 16.0,
            esc(l)
        );
    }
    for v in [lo, (lo + hi) / 2.0, hi] {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"end\">{}</text>",
            left - 6.0,
            y_at(v) + 4.0,
            esc(&number(v))
        );
    }
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"middle\">{}</text>",
        left + plot_w / 2.0,
        height - 6.0,
        esc(y_name)
    );
    for (k, (name, values)) in series.iter().enumerate() {
        let color = PALETTE[(k * 3) % PALETTE.len()];
        let pts: Vec<(f64, f64)> = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.filter(|v| v.is_finite()).map(|v| (x_at(i), y_at(v))))
            .collect();
        let d: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = write!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" />",
            d.join(" ")
        );
        for (x, y) in &pts {
            let _ = write!(s, "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{color}\" />");
        }
        let ly = top + 14.0 + k as f64 * 18.0;
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{color}\" /><text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\">{}</text>",
            left + plot_w + 14.0,
            ly - 10.0,
            left + plot_w + 30.0,
            ly,
            esc(name)
        );
    }
    s.push_str("</svg>");
    s
}

/// A ROC curve: (fpr, tpr) points on the unit square, with the diagonal.
pub fn roc(points: &[(f64, f64)]) -> String {
    let (size, left, top) = (260.0, 40.0, 10.0);
    let plot = size - left - 30.0;
    let mut s = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {size} {size}\" width=\"{size}\" height=\"{size}\" role=\"img\" aria-label=\"ROC curve\">"
    );
    let at = |x: f64, y: f64| (left + plot * x, top + plot * (1.0 - y));
    axes(&mut s, left, top, plot, plot);
    let (x0, y0) = at(0.0, 0.0);
    let (x1, y1) = at(1.0, 1.0);
    let _ = write!(
        s,
        "<path d=\"M{x0:.1} {y0:.1} L{x1:.1} {y1:.1}\" stroke=\"#aaa\" stroke-dasharray=\"4 3\" fill=\"none\" />"
    );
    let mut sorted: Vec<(f64, f64)> = points.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let d: Vec<String> = sorted
        .iter()
        .map(|&(x, y)| {
            let (px, py) = at(x, y);
            format!("{px:.1},{py:.1}")
        })
        .collect();
    let _ = write!(
        s,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#d6604d\" stroke-width=\"2\" />",
        d.join(" ")
    );
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"middle\">false positive rate</text><text x=\"12\" y=\"{:.1}\" class=\"tick\" text-anchor=\"middle\" transform=\"rotate(-90 12 {:.1})\">true positive rate</text><text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"end\">1</text><text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"end\">0</text>",
        left + plot / 2.0,
        size - 4.0,
        top + plot / 2.0,
        top + plot / 2.0,
        left - 4.0,
        top + 8.0,
        left - 4.0,
        top + plot
    );
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("Can't <b>&\"x\""), "Can&#39;t &lt;b&gt;&amp;&quot;x&quot;");
    }
}
