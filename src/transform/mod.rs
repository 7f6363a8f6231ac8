//! SQL steps: a query, inline or from a file relative to the pipeline,
//! planned by DataFusion against the sources and earlier steps.
//!
//! Vars are never pasted into SQL text: [`bind_vars`] turns each `${name}`
//! into one literal token (a number as a number, anything else as a quoted
//! string, quotes doubled), so a value cannot change the statement's shape.
//! The tables a query reads are found by DataFusion's own parser
//! ([`references`]), which is what orders the steps.

use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Whitespace};

use crate::vars::{Piece, Vars, scan};

/// A SQL step after vars are bound and the text parsed.
#[derive(Debug, Clone)]
pub struct SqlStep {
    /// The query with vars bound, as DataFusion plans it.
    pub sql: String,
    /// Where the text came from: `inline` or the file path.
    pub origin: String,
    pub statement: Statement,
}

const MARK: &str = "__crmflow_var_";

/// Replaces each `${...}` in `sql` by a literal of its value.
///
/// # Errors
/// An undefined var, or a reference inside a quoted string, quoted
/// identifier or other token (where a literal cannot go).
pub fn bind_vars(sql: &str, vars: &Vars) -> Result<String, String> {
    let pieces = scan(sql)?;
    let mut marked = String::with_capacity(sql.len());
    let mut values = Vec::new();
    for p in &pieces {
        match p {
            Piece::Text(t) => marked.push_str(t),
            Piece::Var(name) => {
                marked.push_str(&format!("${MARK}{}", values.len()));
                values.push((format!("${{{name}}}"), vars.lookup_var(name)?.to_string()));
            }
            Piece::Env(name) => {
                marked.push_str(&format!("${MARK}{}", values.len()));
                values.push((format!("${{env:{name}}}"), vars.lookup_env(name)?));
            }
        }
    }
    if values.is_empty() {
        return Ok(marked);
    }
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, &marked)
        .tokenize()
        .map_err(|e| format!("SQL syntax error: {e}"))?;
    // The tokens only tell where each marker stands; the text itself is
    // rebuilt from the original characters (token display does not round-trip).
    for token in &tokens {
        match token {
            Token::Placeholder(p) if p.starts_with(&format!("${MARK}")) => {}
            Token::Whitespace(Whitespace::SingleLineComment { .. } | Whitespace::MultiLineComment(_)) => {}
            other => {
                let text = other.to_string();
                if let Some(pos) = text.find(MARK) {
                    let i: usize = text[pos + MARK.len()..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect::<String>()
                        .parse()
                        .unwrap_or(0);
                    let shown = values.get(i).map(|v| v.0.as_str()).unwrap_or("${...}");
                    return Err(format!(
                        "{shown} is inside a quoted string or identifier; write it bare, it becomes a literal (e.g. DATE {shown}, not '{shown}')"
                    ));
                }
            }
        }
    }
    let marker = format!("${MARK}");
    let mut out = String::with_capacity(marked.len());
    let mut rest = marked.as_str();
    while let Some(pos) = rest.find(&marker) {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + marker.len()..];
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        let i: usize = digits.parse().map_err(|_| "malformed var marker".to_string())?;
        let value = values.get(i).ok_or("malformed var marker")?;
        out.push_str(&literal(&value.1));
        rest = &after[digits.len()..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A SQL literal for a var's value: plain decimal numbers stay numbers,
/// everything else is a single-quoted string with quotes doubled.
fn literal(value: &str) -> String {
    let digits = value.strip_prefix('-').unwrap_or(value);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, "0"));
    let is_number = !int.is_empty()
        && int.chars().all(|c| c.is_ascii_digit())
        && (int == "0" || !int.starts_with('0'))
        && !frac.is_empty()
        && frac.chars().all(|c| c.is_ascii_digit());
    if is_number {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

/// Parses one query.
///
/// # Errors
/// A syntax error, more than one statement, or a statement that is not a
/// query (steps read; only sinks write).
pub fn parse(sql: &str) -> Result<Statement, String> {
    let mut statements = DFParser::parse_sql_with_dialect(sql, &GenericDialect {}).map_err(|e| e.to_string())?;
    if statements.len() != 1 {
        return Err(format!(
            "expected exactly one SQL statement, found {}",
            statements.len()
        ));
    }
    let statement = statements.pop_front().ok_or("expected one SQL statement")?;
    match &statement {
        Statement::Statement(s) if matches!(**s, datafusion::sql::sqlparser::ast::Statement::Query(_)) => Ok(statement),
        other => {
            let text = other.to_string();
            let verb: String = text.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
            Err(format!(
                "a step must be a query (SELECT or WITH ... SELECT); found {verb} ..."
            ))
        }
    }
}

/// The tables a query reads (CTE names excluded), lower-cased as
/// DataFusion resolves unquoted names. Found by DataFusion's own resolver;
/// DataFusion's table functions (`generate_series`, `range`) read no table.
///
/// # Errors
/// DataFusion's resolution error.
pub fn references(statement: &Statement) -> Result<Vec<String>, String> {
    let (refs, _) = datafusion::sql::resolve::resolve_table_references(statement, true).map_err(|e| e.to_string())?;
    let table_functions: Vec<String> = datafusion::functions_table::all_default_table_functions()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    let mut names: Vec<String> = refs
        .iter()
        .filter(|r| r.schema().is_some() || !table_functions.iter().any(|f| f == r.table()))
        .map(|r| r.table().to_string())
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Plans the query against what `ctx` has registered.
///
/// # Errors
/// DataFusion's planning error (unknown column, type mismatch, ...).
pub async fn plan(ctx: &SessionContext, step: &SqlStep) -> datafusion::error::Result<LogicalPlan> {
    let state = ctx.state();
    let plan = state.statement_to_plan(step.statement.clone()).await?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn vars() -> Vars {
        let d = BTreeMap::from([
            ("as_of".to_string(), "2026-11-24".to_string()),
            ("rate".to_string(), "0.1".to_string()),
            ("zip".to_string(), "02134".to_string()),
            ("evil".to_string(), "x' OR '1'='1".to_string()),
        ]);
        Vars::resolve(&d, &BTreeMap::new()).unwrap()
    }

    #[test]
    fn vars_become_literals() {
        let v = vars();
        assert_eq!(
            bind_vars(
                "SELECT * FROM t WHERE d <= DATE ${as_of} AND r > ${rate} AND z = ${zip}",
                &v
            )
            .unwrap(),
            "SELECT * FROM t WHERE d <= DATE '2026-11-24' AND r > 0.1 AND z = '02134'"
        );
    }

    #[test]
    fn a_value_cannot_change_the_statement() {
        let v = vars();
        let sql = bind_vars("SELECT * FROM t WHERE name = ${evil}", &v).unwrap();
        assert_eq!(sql, "SELECT * FROM t WHERE name = 'x'' OR ''1''=''1'");
        let tokens = Tokenizer::new(&GenericDialect {}, &sql).tokenize().unwrap();
        let strings = tokens
            .iter()
            .filter(|t| matches!(t, Token::SingleQuotedString(_)))
            .count();
        assert_eq!(strings, 1, "the whole value is one string literal");
    }

    #[test]
    fn a_var_inside_quotes_is_rejected() {
        let v = vars();
        assert_eq!(
            bind_vars("SELECT * FROM t WHERE d = '${as_of}'", &v).unwrap_err(),
            "${as_of} is inside a quoted string or identifier; write it bare, it becomes a literal (e.g. DATE ${as_of}, not '${as_of}')"
        );
    }

    #[test]
    fn only_queries_are_steps() {
        assert_eq!(
            parse("DROP TABLE customers").unwrap_err(),
            "a step must be a query (SELECT or WITH ... SELECT); found DROP TABLE ..."
        );
        assert_eq!(
            parse("SELECT 1; SELECT 2").unwrap_err(),
            "expected exactly one SQL statement, found 2"
        );
    }

    #[test]
    fn references_exclude_ctes() {
        let s = parse("WITH x AS (SELECT * FROM Orders) SELECT * FROM x JOIN customers c USING (id)").unwrap();
        assert_eq!(references(&s).unwrap(), vec!["customers", "orders"]);
        let s = parse("SELECT * FROM generate_series(1, 3) JOIN range(2) USING (value)").unwrap();
        assert_eq!(references(&s).unwrap(), Vec::<String>::new());
    }
}
