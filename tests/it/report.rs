//! The HTML run report through the binary: self-contained, well-formed,
//! with the run's own numbers; written after a failure too, with the
//! error; never inside a sink.

use std::path::Path;

use super::common::{crmflow, error_of};
use serde_json::Value;

/// Parses `html` as XML (the report is well-formed: every element closed,
/// attributes quoted, text escaped) and returns the element names in
/// document order.
fn well_formed(html: &str) -> Vec<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(html);
    let mut open: Vec<String> = Vec::new();
    let mut names = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let n = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                names.push(n.clone());
                open.push(n);
            }
            Ok(Event::Empty(e)) => names.push(String::from_utf8(e.name().as_ref().to_vec()).unwrap()),
            Ok(Event::End(e)) => {
                let n = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                assert_eq!(
                    open.pop().as_deref(),
                    Some(n.as_str()),
                    "at byte {}",
                    reader.buffer_position()
                );
            }
            Ok(Event::Text(t)) => {
                // Entities must be XML's own.
                t.decode().unwrap();
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("not well-formed at byte {}: {e}", reader.buffer_position()),
        }
    }
    assert!(open.is_empty(), "unclosed: {open:?}");
    names
}

/// No network: no scripts, no stylesheets or images from elsewhere, no
/// http(s) URL anywhere.
fn self_contained(html: &str, names: &[String]) {
    for tag in ["script", "link", "img", "iframe", "object", "embed"] {
        assert!(!names.iter().any(|n| n == tag), "<{tag}> in the report");
    }
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(!html.contains("src="));
    assert!(!html.contains("url("));
    // Links stay inside the page.
    for (i, _) in html.match_indices("href=\"") {
        assert_eq!(&html[i + 6..i + 7], "#", "{}", &html[i..i + 40]);
    }
}

fn fixture(dir: &Path) {
    super::rfm::write_hand_fixture(&dir.join("data/features/part-0.parquet"));
}

const PIPELINE: &str = "name: report_test
vars:
  out: out
sources:
  features: {url: data/features/}
steps:
  - name: spenders
    sql: SELECT customer_id, monetary FROM features WHERE monetary > 100
  - name: rfm
    rfm:
      input: features
sinks:
  - table: rfm
    url: ${out}/rfm/
    checks:
      - row_count: {min: 10}
  - table: rfm_profile
    url: ${out}/rfm_profile/
  - table: spenders
    url: ${out}/spenders/
report: ${out}/report.html
";

#[test]
fn the_report_is_self_contained_well_formed_and_shows_the_runs_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fixture(d);
    std::fs::write(d.join("p.yaml"), PIPELINE).unwrap();
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let html = std::fs::read_to_string(d.join("out/report.html")).unwrap();
    let names = well_formed(&html);
    self_contained(&html, &names);
    assert!(html.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
    assert!(html.contains("<title>report_test — run "));
    assert!(html.contains("<span class=\"badge success\">success</span>"));
    // Steps, with the rows of the cached step; sinks; checks.
    assert!(
        html.contains("<tr><td>spenders</td><td>sql</td><td class=\"pass\">success</td><td class=\"n\">(view)</td>")
    );
    assert!(html.contains("<tr><td>rfm</td><td>rfm</td><td class=\"pass\">success</td><td class=\"n\">"));
    assert!(html.contains("<tr><td>rfm</td><td class=\"n\">10</td><td class=\"n\">1</td>"));
    assert!(html.contains("<tr><td>spenders</td><td class=\"n\">5</td><td class=\"n\">1</td>"));
    assert!(html.contains("<td class=\"pass\">yes</td>"));
    assert!(!html.contains("<td class=\"fail\">no</td>"));
    assert!(html.contains("<p class=\"meta\">1 run, 0 failed</p>"));
    assert!(html.contains(
        "<tr><td>sink &quot;rfm&quot;</td><td><code>row_count(min 10)</code></td><td>error</td><td class=\"pass\">passed</td><td class=\"n\">0</td>"
    ));
    // The RFM story: the grid (tests/it/rfm.rs computes the scores by
    // hand: 1 Champion at r 5 fm 5, Lost 7 and 10 at r 1 fm 1, ...), the
    // sizes and the profile in map order.
    assert!(html.contains("<section class=\"stage\" id=\"stage-rfm\"><h2>rfm <span class=\"meta\">(rfm)</span></h2>"));
    let grid = &html[html.find("<table class=\"grid\">").unwrap()..];
    let grid = &grid[..grid.find("</table>").unwrap()];
    let cell = |seg: &str, n: u32| format!(">{seg}<br />{n}</td>");
    for (seg, n) in [
        ("Champions", 1),
        ("New Customers", 1),
        ("Loyal Customers", 2),
        ("Potential Loyalist", 1),
        ("Need Attention", 1),
        ("At Risk", 1),
        ("Hibernating", 1),
        ("Lost", 2),
    ] {
        assert!(grid.contains(&cell(seg, n)), "{seg} {n} in {grid}");
    }
    // Loyal Customers 6 (3, 4, 5) and 9 (3, 5, 3) share the cell r 3, fm 4.
    assert_eq!(grid.matches("<td>0</td>").count(), 25 - 8);
    assert!(html.contains(
        "<tr><td>Loyal Customers</td><td>r 3-4, fm 4-5</td><td class=\"n\">2</td><td class=\"n\">0.2000</td>"
    ));
    assert!(html.contains("<tr><td>Promising</td><td>r 4, fm 1</td><td class=\"n\">0</td><td class=\"n\">0</td>"));
    assert!(html.contains("aria-label=\"RFM segment sizes\""));
}

#[test]
fn a_failed_run_writes_its_report_with_the_error_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fixture(d);
    std::fs::write(d.join("p.yaml"), PIPELINE.replace("{min: 10}", "{min: 11}")).unwrap();
    let out = crmflow(d, &["run", "p.yaml", "--report", "failed.html"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    // --report wins over report:.
    assert!(!d.join("out/report.html").exists());
    assert!(!d.join("out/rfm").exists());
    let html = std::fs::read_to_string(d.join("failed.html")).unwrap();
    let names = well_formed(&html);
    self_contained(&html, &names);
    assert!(html.contains("<span class=\"badge failed\">failed</span>"));
    assert!(html.contains(
        "<div class=\"error\"><strong>The run failed.</strong> Nothing was published; the previous outputs are untouched.<pre>"
    ));
    let error = error_of(&out);
    assert!(
        html.contains(&format!("<pre>{}</pre>", error.replace('"', "&quot;"))),
        "{error}"
    );
    assert!(html.contains("<td class=\"fail\">failed</td>"));
    // The stage ran, so its story is there.
    assert!(html.contains("id=\"stage-rfm\""));
}

#[test]
fn a_report_inside_a_sink_or_naming_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fixture(d);
    std::fs::write(d.join("p.yaml"), PIPELINE).unwrap();
    let out = crmflow(d, &["run", "p.yaml", "--report", "out/rfm/report.html"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let root = std::fs::canonicalize(d).unwrap();
    let root = root.display();
    assert_eq!(
        error_of(&out),
        format!(
            "invalid pipeline p.yaml: report: {root}/out/rfm/report.html is inside the location of sink \"rfm\" ({root}/out/rfm/); publishing it would remove the report"
        )
    );
    assert!(!d.join("out").exists());
    std::fs::create_dir_all(d.join("reports")).unwrap();
    let out = crmflow(d, &["run", "p.yaml", "--report", "reports"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        error_of(&out),
        format!(
            "invalid pipeline p.yaml: report: {root}/reports/ is a directory; name the file (e.g. {root}/reports/report.html)"
        )
    );
}

/// `bad` fails on the data ('x' is no number) when it is computed;
/// `rfm_bad` reads it, `rfm` does not.
const FAILING: &str = "name: report_fail
sources:
  features: {url: data/features/}
steps:
  - name: bad
    cache: true
    sql: >-
      SELECT customer_id, recency_days, frequency,
      monetary + CAST(CASE WHEN customer_id > 0 THEN 'x' ELSE '1' END AS DOUBLE) AS monetary FROM features
  - name: rfm_bad
    rfm:
      input: bad
  - name: rfm
    rfm:
      input: features
sinks:
  - table: rfm
    url: out/rfm/
";

#[test]
fn a_failed_or_skipped_step_shows_its_status_and_reason_and_has_no_story() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fixture(d);
    std::fs::write(d.join("p.yaml"), FAILING).unwrap();
    let out = crmflow(d, &["run", "p.yaml", "--report", "r.html"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(!d.join("out/rfm").exists());
    let summary: Value = serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap();
    let bad = summary["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "bad")
        .unwrap();
    let reason = bad["reason"].as_str().unwrap();
    assert!(reason.starts_with("step \"bad\": "), "{reason}");
    let html = std::fs::read_to_string(d.join("r.html")).unwrap();
    let names = well_formed(&html);
    self_contained(&html, &names);
    let row = |step: &str| {
        let at = html
            .find(&format!("<tr><td>{step}</td>"))
            .unwrap_or_else(|| panic!("no row {step}"));
        let row = &html[at..];
        row[..row.find("</tr>").unwrap()].to_string()
    };
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let bad = row("bad");
    assert!(
        bad.starts_with("<tr><td>bad</td><td>sql</td><td class=\"fail\">error</td><td class=\"n\">–</td>"),
        "{bad}"
    );
    assert!(
        bad.ends_with(&format!("<td class=\"why\">{}</td>", esc(reason))),
        "{bad}"
    );
    assert_eq!(
        row("rfm_bad"),
        "<tr><td>rfm_bad</td><td>rfm</td><td class=\"not-run\">skipped</td><td class=\"n\">–</td><td class=\"n\">0.000</td><td><svg width=\"160\" height=\"10\"><rect width=\"0.0\" height=\"10\" fill=\"#4575b4\" /></svg></td><td class=\"why\">depends on failed step &quot;bad&quot;</td>"
    );
    let rfm = row("rfm");
    assert!(
        rfm.starts_with("<tr><td>rfm</td><td>rfm</td><td class=\"pass\">success</td><td class=\"n\">(view)</td>"),
        "{rfm}"
    );
    assert!(rfm.ends_with("<td class=\"why\"></td>"), "{rfm}");
    // Only the stage that succeeded is read for the report.
    assert!(html.contains("<section class=\"stage\" id=\"stage-rfm\">"));
    assert!(!html.contains("id=\"stage-rfm_bad\""));
    assert!(!html.contains("id=\"stage-bad\""));
}

#[test]
fn with_select_the_report_shows_the_selected_run_and_is_checked_against_every_sink() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fixture(d);
    std::fs::write(d.join("p.yaml"), PIPELINE).unwrap();
    let out = crmflow(d, &["run", "p.yaml", "--select", "spenders"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let html = std::fs::read_to_string(d.join("out/report.html")).unwrap();
    assert!(html.contains("<tr><td>spenders</td><td>sql</td><td class=\"pass\">success</td>"));
    assert!(!html.contains("<tr><td>rfm</td>"));
    assert!(!html.contains("id=\"stage-rfm\""));
    assert!(!d.join("out/rfm").exists());
    // The sink of the unselected rfm still guards its location.
    let out = crmflow(
        d,
        &["run", "p.yaml", "--select", "spenders", "--report", "out/rfm/r.html"],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    let root = std::fs::canonicalize(d).unwrap();
    let root = root.display();
    assert_eq!(
        error_of(&out),
        format!(
            "invalid pipeline p.yaml: report: {root}/out/rfm/r.html is inside the location of sink \"rfm\" ({root}/out/rfm/); publishing it would remove the report"
        )
    );
}

#[test]
fn backfill_refuses_report_and_a_report_location_shared_by_its_values() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fixture(d);
    let yaml = PIPELINE.replace("  out: out\n", "  out: out\n  as_of: \"2026-01-01\"\n");
    std::fs::write(d.join("p.yaml"), &yaml).unwrap();
    let backfill = ["run", "p.yaml", "--backfill", "as_of=2026-01-01..2026-01-03"];
    let out = crmflow(d, &[&backfill[..], &["--report", "r.html"]].concat());
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        error_of(&out),
        "--report writes the report of one run and --backfill as_of=2026-01-01..2026-01-03 makes one run per value: give one (a report: in the pipeline with ${var} in its path writes one report per value)"
    );
    let out = crmflow(d, &backfill);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let root = std::fs::canonicalize(d).unwrap();
    assert_eq!(
        error_of(&out),
        format!(
            "report: {}/out/report.html is the same for several values of --backfill as_of=2026-01-01..2026-01-03: put ${{as_of}} in its path, so that each value writes its own report",
            root.display()
        )
    );
    assert!(!d.join("out").exists());
    assert!(!d.join("r.html").exists());
}
