//! The HTML run report (`--report PATH.html`, `report:`): one self-contained
//! file — inline CSS and SVG, no scripts, no external resources — with the
//! run summary (status, error, steps, sinks, checks) and each stage step's
//! story from [`super::story`]. Known tables get charts; any other table a
//! stage makes is shown as a table, so a new stage output never breaks it.
//!
//! The markup is well-formed XML as well as HTML (every element closed,
//! attributes quoted, text escaped), which the tests check with an XML
//! parser.

use std::fmt::Write as _;

use super::report::{RunStatus, RunSummary, StepStatus};
use super::story::{Cell, StepStory, Story, Table, number};
use super::svg::{self, PALETTE, esc};

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:0;color:#222;background:#f6f7f9}
main{max-width:1040px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px;color:#444}
.meta{color:#555;font-size:14px}.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600;font-size:14px;vertical-align:middle}
.success{background:#1a7f37}.failed,.invalid{background:#c62828}.interrupted,.running{background:#9a6700}
.error{background:#fdecea;border:1px solid #f5c2c0;padding:10px 14px;border-radius:6px}
.error pre{white-space:pre-wrap;margin:6px 0 0;font-size:13px}
section.stage{background:#fff;border:1px solid #e3e5e8;border-radius:8px;padding:4px 18px 14px;margin:18px 0}
table{border-collapse:collapse;font-size:13px;margin:6px 0 10px;background:#fff}
th,td{border:1px solid #e0e0e0;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.fail{color:#c62828;font-weight:600}td.pass{color:#1a7f37}td.not-run{color:#9a6700}
.panels{display:flex;flex-wrap:wrap;gap:0 28px;align-items:flex-start}.panel{max-width:100%;overflow-x:auto}
.chart{max-width:100%;height:auto;display:block;margin:4px 0 8px}td{white-space:nowrap}td.why{white-space:pre-wrap}
.chart .tick{font-size:11px;fill:#444}.chart .label{font-size:12px;fill:#222}
.grid td{width:150px;height:44px;text-align:center;font-size:12px;color:#111}
.note{color:#666;font-size:13px}nav a{margin-right:12px;font-size:14px}
footer{color:#888;font-size:12px;margin-top:30px}
";

/// The report of a run: `summary` as it ended, `story` as far as it got.
pub fn render(summary: &RunSummary, story: &Story) -> String {
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\" />");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\" />");
    let _ = write!(
        h,
        "<title>{} — run {} ({})</title><style>{STYLE}</style></head><body><main>",
        esc(&summary.pipeline),
        esc(&summary.run_id),
        summary.status.as_str()
    );
    header(&mut h, summary);
    h.push_str("<nav><a href=\"#steps\">Steps</a><a href=\"#sinks\">Sinks</a><a href=\"#checks\">Checks</a>");
    for s in &story.steps {
        let _ = write!(h, "<a href=\"#stage-{}\">{}</a>", esc(&s.step), esc(&s.step));
    }
    h.push_str("</nav>");
    steps(&mut h, summary);
    sinks(&mut h, summary);
    checks(&mut h, summary);
    for s in &story.steps {
        stage(&mut h, s);
    }
    let _ = writeln!(
        h,
        "<footer>crmflow {} · run {} · every figure comes from the run's own tables</footer></main></body></html>",
        env!("CARGO_PKG_VERSION"),
        esc(&summary.run_id)
    );
    h
}

fn header(h: &mut String, s: &RunSummary) {
    let _ = write!(
        h,
        "<h1>{} <span class=\"badge {}\">{}</span></h1><p class=\"meta\">run {} · started {} · {:.2} s</p>",
        esc(&s.pipeline),
        s.status.as_str(),
        s.status.as_str(),
        esc(&s.run_id),
        esc(&s.started_at),
        s.seconds
    );
    if !s.vars.is_empty() {
        let vars: Vec<String> = s
            .vars
            .iter()
            .map(|(k, v)| format!("<code>{}={}</code>", esc(k), esc(v)))
            .collect();
        let _ = write!(h, "<p class=\"meta\">vars: {}</p>", vars.join(" "));
    }
    if let Some(e) = &s.error {
        let published = if s.published.is_empty() {
            "Nothing was published; the previous outputs are untouched.".to_string()
        } else {
            format!(
                "Published: {}. Not published (previous outputs untouched): {}.",
                s.published.join(", "),
                s.not_published.join(", ")
            )
        };
        let _ = write!(
            h,
            "<div class=\"error\"><strong>The run {}.</strong> {}<pre>{}</pre></div>",
            match s.status {
                RunStatus::Interrupted => "was interrupted",
                RunStatus::Invalid => "is invalid",
                _ => "failed",
            },
            esc(&published),
            esc(e)
        );
    }
}

fn steps(h: &mut String, s: &RunSummary) {
    h.push_str("<h2 id=\"steps\">Steps</h2>");
    if s.steps.is_empty() {
        h.push_str("<p class=\"note\">No step ran.</p>");
        return;
    }
    let most = s.steps.iter().map(|x| x.seconds).fold(0.0, f64::max);
    h.push_str(
        "<table><tr><th>step</th><th>kind</th><th>status</th><th>rows</th><th>seconds</th><th></th><th>reason</th></tr>",
    );
    for st in &s.steps {
        let w = if most > 0.0 { 160.0 * st.seconds / most } else { 0.0 };
        let ok = st.status == StepStatus::Success;
        let rows = match st.rows {
            Some(r) => r.to_string(),
            None if ok => "(view)".to_string(),
            None => "–".to_string(),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td class=\"n\">{rows}</td><td class=\"n\">{:.3}</td><td><svg width=\"160\" height=\"10\"><rect width=\"{w:.1}\" height=\"10\" fill=\"#4575b4\" /></svg></td><td class=\"why\">{}</td></tr>",
            esc(&st.name),
            esc(st.kind),
            match st.status {
                StepStatus::Success => "pass",
                StepStatus::Error => "fail",
                StepStatus::Skipped | StepStatus::Deferred => "not-run",
            },
            st.status.as_str(),
            st.seconds,
            esc(st.reason.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</table>");
}

fn sinks(h: &mut String, s: &RunSummary) {
    h.push_str("<h2 id=\"sinks\">Sinks</h2>");
    if s.sinks.is_empty() {
        h.push_str("<p class=\"note\">No sink was written.</p>");
        return;
    }
    h.push_str(
        "<table><tr><th>table</th><th>rows</th><th>files</th><th>bytes</th><th>seconds</th><th>published</th><th>location</th></tr>",
    );
    for sk in &s.sinks {
        let published = s.published.contains(&sk.table);
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.3}</td><td class=\"{}\">{}</td><td><code>{}</code></td></tr>",
            esc(&sk.table),
            sk.rows,
            sk.files,
            sk.bytes,
            sk.seconds,
            if published { "pass" } else { "fail" },
            if published { "yes" } else { "no" },
            esc(&sk.url)
        );
    }
    h.push_str("</table>");
}

fn checks(h: &mut String, s: &RunSummary) {
    h.push_str("<h2 id=\"checks\">Checks</h2>");
    if s.checks.is_empty() {
        h.push_str("<p class=\"note\">No check ran.</p>");
        return;
    }
    let failed = s.checks.iter().filter(|c| !c.outcome.passed).count();
    let _ = write!(h, "<p class=\"meta\">{} run, {failed} failed</p>", s.checks.len());
    h.push_str("<table><tr><th>on</th><th>check</th><th>severity</th><th>result</th><th>failing rows</th><th>message</th></tr>");
    for c in &s.checks {
        let o = &c.outcome;
        let severity = serde_json::to_value(o.severity)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td class=\"{}\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            esc(&c.on),
            esc(&o.check),
            esc(&severity),
            if o.passed { "pass" } else { "fail" },
            if o.passed { "passed" } else { "failed" },
            o.failing,
            esc(&o.message)
        );
    }
    h.push_str("</table>");
}

fn stage(h: &mut String, s: &StepStory) {
    let _ = write!(
        h,
        "<section class=\"stage\" id=\"stage-{}\"><h2>{} <span class=\"meta\">({})</span></h2>",
        esc(&s.step),
        esc(&s.step),
        esc(&s.kind)
    );
    h.push_str("<div class=\"panels\">");
    for hist in &s.histograms {
        let _ = write!(
            h,
            "<div class=\"panel\"><h3>Distribution of {}</h3><p class=\"meta\">{} values, mean {}, min {}, max {}{}</p>{}</div>",
            esc(&hist.column),
            hist.count,
            esc(&number(hist.mean)),
            esc(&number(hist.min)),
            esc(&number(hist.max)),
            if hist.missing > 0 {
                format!(", {} without a value", hist.missing)
            } else {
                String::new()
            },
            svg::histogram(hist)
        );
    }
    if !s.rfm_grid.is_empty() {
        rfm_grid(h, s);
    }
    for t in &s.tables {
        let suffix = t.name.strip_prefix(s.step.as_str()).unwrap_or(&t.name);
        match (s.kind.as_str(), suffix) {
            (_, "_model" | "_metrics") if is_name_value(t) => name_value(h, t),
            ("segment", "_profile") => segment_profile(h, t, s.standardized.as_ref()),
            (_, "_k_selection") => k_selection(h, t),
            (_, "_calibration") => calibration(h, t),
            ("rfm", "_profile") => rfm_profile(h, t),
            (_, "_roc") => roc(h, t),
            _ => generic(h, t, &t.name),
        }
    }
    h.push_str("</div>");
    for n in &s.notes {
        let _ = write!(h, "<p class=\"note\">{}</p>", esc(n));
    }
    h.push_str("</section>");
}

/// A plain table of `t` (every column, every kept row).
fn generic(h: &mut String, t: &Table, title: &str) {
    let _ = write!(h, "<div class=\"panel\"><h3>{}</h3><table><tr>", esc(title));
    for c in &t.columns {
        let _ = write!(h, "<th>{}</th>", esc(c));
    }
    h.push_str("</tr>");
    for r in &t.rows {
        h.push_str("<tr>");
        for v in r {
            let class = if matches!(v, Cell::Num(_)) { " class=\"n\"" } else { "" };
            let _ = write!(h, "<td{class}>{}</td>", esc(&v.to_string()));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    if t.truncated {
        let _ = write!(
            h,
            "<p class=\"note\">The first {} rows of {}.</p>",
            super::story::MAX_ROWS,
            esc(&t.name)
        );
    }
    h.push_str("</div>");
}

fn is_name_value(t: &Table) -> bool {
    t.columns.len() == 2 && (t.col("name").is_some() || t.col("metric").is_some()) && t.col("value").is_some()
}

/// A (name, value) table; `x` and `x_se` go on one row (value, standard
/// error).
fn name_value(h: &mut String, t: &Table) {
    let key = if t.col("name").is_some() { "name" } else { "metric" };
    let names = t.texts(key).unwrap_or_default();
    let values = t.nums("value").unwrap_or_default();
    let has_se = names
        .iter()
        .any(|n| n.ends_with("_se") && names.contains(&n[..n.len() - 3].to_string()));
    let show = |v: Option<f64>| v.map(number).unwrap_or_default();
    let _ = write!(
        h,
        "<div class=\"panel\"><h3>{}</h3><table><tr><th>{key}</th><th>value</th>",
        esc(&t.name)
    );
    if has_se {
        h.push_str("<th>standard error</th>");
    }
    h.push_str("</tr>");
    for (i, n) in names.iter().enumerate() {
        if has_se && n.ends_with("_se") && names.contains(&n[..n.len() - 3].to_string()) {
            continue;
        }
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td>",
            esc(&label(n)),
            esc(&show(values.get(i).copied().flatten()))
        );
        if has_se {
            let se = names
                .iter()
                .position(|m| *m == format!("{n}_se"))
                .and_then(|j| values.get(j).copied().flatten());
            let _ = write!(h, "<td class=\"n\">{}</td>", esc(&show(se)));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table></div>");
}

/// Metric names as people read them.
fn label(name: &str) -> String {
    match name {
        "r2" => "R²".into(),
        "rmse" => "RMSE".into(),
        "mae" => "MAE".into(),
        "auc" => "AUC".into(),
        "log_loss" => "log loss".into(),
        other => other.to_string(),
    }
}

fn segment_profile(h: &mut String, t: &Table, z: Option<&Table>) {
    if let (Some(segs), Some(sizes)) = (t.texts("segment"), t.nums("size")) {
        let labels: Vec<String> = segs.iter().map(|s| format!("segment {s}")).collect();
        let values: Vec<f64> = sizes.iter().map(|v| v.unwrap_or(0.0)).collect();
        let _ = write!(
            h,
            "<div class=\"panel\"><h3>Segment sizes</h3>{}</div>",
            svg::bars("segment sizes", &labels, &values, PALETTE)
        );
    }
    if let Some(z) = z {
        heatmap(h, z);
    }
    generic(h, t, &t.name);
}

/// Mean standardized features per segment, coloured from blue (below the
/// overall mean) to red (above).
fn heatmap(h: &mut String, z: &Table) {
    h.push_str("<div class=\"panel\"><h3>Mean standardized features per segment</h3><p class=\"meta\">(segment mean − overall mean) / overall standard deviation</p><table><tr>");
    for c in &z.columns {
        let _ = write!(h, "<th>{}</th>", esc(c));
    }
    h.push_str("</tr>");
    for r in &z.rows {
        h.push_str("<tr>");
        for (j, v) in r.iter().enumerate() {
            match v {
                Cell::Num(x) if j > 0 => {
                    let a = (x.abs().min(2.0) / 2.0 * 0.85 * 100.0).round() / 100.0;
                    let rgb = if *x >= 0.0 { "214,96,77" } else { "67,147,195" };
                    let _ = write!(
                        h,
                        "<td class=\"n\" style=\"background:rgba({rgb},{a})\">{}</td>",
                        esc(&format!("{x:+.2}"))
                    );
                }
                other => {
                    let _ = write!(h, "<td>{}</td>", esc(&other.to_string()));
                }
            }
        }
        h.push_str("</tr>");
    }
    h.push_str("</table></div>");
}

fn k_selection(h: &mut String, t: &Table) {
    if let (Some(k), Some(sil)) = (t.texts("k"), t.nums("silhouette"))
        && k.len() > 1
    {
        let _ = write!(
            h,
            "<div class=\"panel\"><h3>Choosing k: mean silhouette</h3>{}</div>",
            svg::lines("silhouette by k", &k, &[("silhouette".to_string(), sil)], "k")
        );
    }
    generic(h, t, &t.name);
}

/// A calibration table: the first column labels the x axis; the columns
/// named like actual / predicted / expected are drawn as lines.
fn calibration(h: &mut String, t: &Table) {
    if let Some(first) = t.columns.first()
        && let Some(x) = t.texts(first)
    {
        let series: Vec<(String, Vec<Option<f64>>)> = t
            .columns
            .iter()
            .skip(1)
            .filter(|c| ["actual", "predicted", "expected"].iter().any(|w| c.contains(w)))
            .filter_map(|c| t.nums(c).map(|v| (c.clone(), v)))
            .collect();
        if !series.is_empty() {
            let _ = write!(
                h,
                "<div class=\"panel\"><h3>Calibration: holdout purchases, actual and predicted</h3>{}</div>",
                svg::lines("calibration", &x, &series, first)
            );
        }
    }
    generic(h, t, &t.name);
}

fn rfm_profile(h: &mut String, t: &Table) {
    if let (Some(segs), Some(sizes)) = (t.texts("rfm_segment"), t.nums("size")) {
        let values: Vec<f64> = sizes.iter().map(|v| v.unwrap_or(0.0)).collect();
        let _ = write!(
            h,
            "<div class=\"panel\"><h3>RFM segment sizes</h3>{}</div>",
            svg::bars("RFM segment sizes", &segs, &values, PALETTE)
        );
    }
    generic(h, t, &t.name);
}

/// The R × FM grid: each cell coloured by its largest segment, with the
/// customer count.
fn rfm_grid(h: &mut String, s: &StepStory) {
    let profile = s.tables.iter().find(|t| t.name == format!("{}_profile", s.step));
    let order: Vec<String> = profile.and_then(|p| p.texts("rfm_segment")).unwrap_or_default();
    let color = |seg: &str| {
        let i = order.iter().position(|o| o == seg).unwrap_or(order.len());
        PALETTE[i % PALETTE.len()]
    };
    h.push_str("<div class=\"panel\"><h3>The RFM map: recency × (frequency + monetary) / 2</h3><table class=\"grid\"><tr><th>r \\ fm</th>");
    for fm in 1..=5 {
        let _ = write!(h, "<th>{fm}</th>");
    }
    h.push_str("</tr>");
    for r in (1..=5).rev() {
        let _ = write!(h, "<tr><th>{r}</th>");
        for fm in 1..=5 {
            let cell: Vec<&(i32, i32, String, i64)> = s.rfm_grid.iter().filter(|c| c.0 == r && c.1 == fm).collect();
            let n: i64 = cell.iter().map(|c| c.3).sum();
            match cell.iter().max_by(|a, b| a.3.cmp(&b.3).then(b.2.cmp(&a.2))) {
                Some(top) => {
                    let _ = write!(
                        h,
                        "<td style=\"background:{}\">{}<br />{n}</td>",
                        color(&top.2),
                        esc(&top.2)
                    );
                }
                None => h.push_str("<td>0</td>"),
            }
        }
        h.push_str("</tr>");
    }
    h.push_str("</table></div>");
}

/// The ROC curve (fpr, tpr) with the diagonal, and the table.
fn roc(h: &mut String, t: &Table) {
    if let (Some(fpr), Some(tpr)) = (t.nums("fpr"), t.nums("tpr")) {
        let pts: Vec<(f64, f64)> = fpr.iter().zip(&tpr).filter_map(|(x, y)| Some(((*x)?, (*y)?))).collect();
        if !pts.is_empty() {
            let _ = write!(
                h,
                "<div class=\"panel\"><h3>ROC curve on the holdout</h3>{}</div>",
                svg::roc(&pts)
            );
        }
    }
    // Every tenth threshold of the table.
    let tenths = t.nums("threshold").map(|th| {
        let rows = t
            .rows
            .iter()
            .zip(th)
            .filter(|(_, v)| v.is_some_and(|v| ((v * 10.0).round() - v * 10.0).abs() < 1e-9))
            .map(|(r, _)| r.clone())
            .collect();
        Table { rows, ..t.clone() }
    });
    generic(h, tenths.as_ref().unwrap_or(t), &format!("{} (every 0.1)", t.name));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::report::RunSummary;

    fn summary() -> RunSummary {
        RunSummary {
            run_id: "r1".into(),
            pipeline: "p".into(),
            status: RunStatus::Success,
            vars: Default::default(),
            started_at: "2026-12-01T00:00:00.000Z".into(),
            seconds: 1.0,
            steps: vec![],
            sinks: vec![],
            checks: vec![],
            published: vec![],
            not_published: vec![],
            error: None,
            spill: None,
        }
    }

    fn table(name: &str, columns: &[&str], rows: Vec<Vec<Cell>>) -> Table {
        Table {
            name: name.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows,
            truncated: false,
        }
    }

    fn nv(pairs: &[(&str, f64)]) -> Vec<Vec<Cell>> {
        pairs
            .iter()
            .map(|(n, v)| vec![Cell::Text(n.to_string()), Cell::Num(*v)])
            .collect()
    }

    #[test]
    fn standard_errors_go_beside_their_parameters() {
        let t = table(
            "clv_model",
            &["name", "value"],
            nv(&[("r", 1.5), ("r_se", 0.25), ("iterations", 17.0)]),
        );
        let mut h = String::new();
        name_value(&mut h, &t);
        assert_eq!(
            h,
            "<div class=\"panel\"><h3>clv_model</h3><table><tr><th>name</th><th>value</th><th>standard error</th></tr>\
             <tr><td>r</td><td class=\"n\">1.500</td><td class=\"n\">0.2500</td></tr>\
             <tr><td>iterations</td><td class=\"n\">17</td><td class=\"n\"></td></tr></table></div>"
        );
    }

    #[test]
    fn unknown_kinds_and_tables_are_shown_as_tables_and_calibration_as_a_chart() {
        let story = Story {
            steps: vec![StepStory {
                step: "m".into(),
                kind: "mystery".into(),
                tables: vec![
                    table(
                        "m_oddities",
                        &["what", "how_many", "ok"],
                        vec![vec![Cell::Text("a<b".into()), Cell::Num(3.0), Cell::Bool(true)]],
                    ),
                    table(
                        "m_calibration",
                        &["bucket", "customers", "mean_actual", "mean_predicted"],
                        vec![
                            vec![Cell::Text("0".into()), Cell::Num(10.0), Cell::Num(0.1), Cell::Num(0.2)],
                            vec![Cell::Text("7+".into()), Cell::Num(2.0), Cell::Num(3.0), Cell::Null],
                        ],
                    ),
                ],
                notes: vec!["table m_x could not be read: gone".into()],
                ..StepStory::default()
            }],
        };
        let html = render(&summary(), &story);
        assert!(html.contains(
            "<h3>m_oddities</h3><table><tr><th>what</th><th>how_many</th><th>ok</th></tr><tr><td>a&lt;b</td><td class=\"n\">3</td><td>true</td></tr></table>"
        ));
        // Two series; the missing predicted point is skipped.
        let chart = &html[html.find("<h3>Calibration").unwrap()..];
        assert_eq!(chart[..chart.find("</svg>").unwrap()].matches("<polyline").count(), 2);
        assert_eq!(chart[..chart.find("</svg>").unwrap()].matches("<circle").count(), 3);
        assert!(html.contains("<p class=\"note\">table m_x could not be read: gone</p>"));
        assert!(html.contains("<p class=\"note\">No step ran.</p>"));
    }

    #[test]
    fn a_failed_run_shows_what_was_published() {
        let mut s = summary();
        s.status = RunStatus::Failed;
        s.error = Some("sink \"b\": <denied>".into());
        s.published = vec!["a".into()];
        s.not_published = vec!["b".into()];
        let html = render(&s, &Story::default());
        assert!(html.contains(
            "<div class=\"error\"><strong>The run failed.</strong> Published: a. Not published (previous outputs untouched): b.<pre>sink &quot;b&quot;: &lt;denied&gt;</pre></div>"
        ));
    }
}
