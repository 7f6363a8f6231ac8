//! How a sink lays out its Parquet for BI readers: Hive partition
//! directory names, sort order (`sorting_columns` in the footer), file and
//! row-group sizes, bloom filters and column descriptions. All of it goes
//! through DataFusion's Parquet writer options.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::config::TableParquetOptions;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

/// The directory value Hive and Spark write for a NULL or empty partition
/// value (and read back as NULL).
pub const HIVE_DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Default target size of one data file (estimated from column widths
/// before compression, so written files come out at or below it).
pub const DEFAULT_TARGET_FILE_SIZE: u64 = 512 * 1024 * 1024;

/// Default rows per row group.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 131_072;

/// A sink's layout options (see the README, "Layout").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Columns the rows are sorted by, first to last; the remaining columns
    /// break ties, so identical input gives identical files.
    pub sort_by: Vec<String>,
    pub target_file_size: u64,
    pub row_group_rows: usize,
    /// Columns with a Parquet bloom filter.
    pub bloom_filters: Vec<String>,
    /// Column descriptions, written as the field metadata `description`.
    pub descriptions: BTreeMap<String, String>,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            sort_by: Vec::new(),
            target_file_size: DEFAULT_TARGET_FILE_SIZE,
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
            bloom_filters: Vec::new(),
            descriptions: BTreeMap::new(),
        }
    }
}

/// Whether Hive's `FileUtils.escapePathName` (and Spark's
/// `ExternalCatalogUtils.escapePathName`, off Windows) escapes `c`: the
/// ASCII controls 0x00–0x1F, 0x7F and `"#%'*/:=?\{[]^`. Everything else,
/// non-ASCII included, stays as it is.
fn needs_escape(c: char) -> bool {
    matches!(
        c,
        '\u{0}'
            ..='\u{1F}'
                | '\u{7F}'
                | '"'
                | '#'
                | '%'
                | '\''
                | '*'
                | '/'
                | ':'
                | '='
                | '?'
                | '\\'
                | '{'
                | '['
                | ']'
                | '^'
    )
}

/// A partition value as Hive writes it in a `key=value` directory name:
/// the characters of [`needs_escape`] as `%XX` (upper-case hex), NULL and
/// `""` as [`HIVE_DEFAULT_PARTITION`].
pub fn hive_escape(value: Option<&str>) -> String {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return HIVE_DEFAULT_PARTITION.to_string();
    };
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if needs_escape(c) {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The inverse of [`hive_escape`], as Hive's `unescapePathName` does it: a
/// `%` followed by two hex digits is that character, anything else stays;
/// [`HIVE_DEFAULT_PARTITION`] is NULL.
pub fn hive_unescape(dir_value: &str) -> Option<String> {
    if dir_value == HIVE_DEFAULT_PARTITION {
        return None;
    }
    let b = dir_value.as_bytes();
    let mut out = String::with_capacity(dir_value.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
            && let Ok(code) = u8::from_str_radix(&dir_value[i + 1..i + 3], 16)
        {
            out.push(char::from(code));
            i += 3;
            continue;
        }
        let c = dir_value[i..].chars().next().unwrap_or('\u{FFFD}');
        out.push(c);
        i += c.len_utf8();
    }
    Some(out)
}

/// The problems of a layout against the table it writes: unknown columns,
/// a sort or bloom-filter column that is a partition column.
pub fn validate(layout: &Layout, partition_by: &[String], schema: &Schema, table: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let known = |c: &str| schema.field_with_name(c).is_ok();
    let columns = || crate::checks::column_list(schema);
    let mut check = |what: &str, c: &str| {
        if !known(c) {
            problems.push(format!(
                "{what} column \"{c}\" is not in table \"{table}\" (columns: {})",
                columns()
            ));
        } else if partition_by.iter().any(|p| p == c) && what != "descriptions" {
            problems.push(format!(
                "{what} column \"{c}\" is a partition_by column (one value per directory: nothing to sort or filter in the files)"
            ));
        }
    };
    for c in &layout.sort_by {
        check("sort_by", c);
    }
    for c in &layout.bloom_filters {
        check("bloom_filters", c);
    }
    for c in layout.descriptions.keys() {
        check("descriptions", c);
    }
    problems
}

/// The columns the rows are sorted by: `sort_by`, then every other
/// sortable column that is not a partition column (ties broken, so the
/// order, and with it the files, depend only on the rows). Nothing without
/// `sort_by`: the write streams (a sort holds the whole table, spilling
/// only under a memory limit).
pub fn sort_columns(layout: &Layout, partition_by: &[String], schema: &Schema) -> Vec<String> {
    if layout.sort_by.is_empty() {
        return Vec::new();
    }
    let mut cols: Vec<String> = layout.sort_by.clone();
    for f in schema.fields() {
        let n = f.name();
        if !cols.contains(n) && !partition_by.contains(n) && sortable(f.data_type()) {
            cols.push(n.clone());
        }
    }
    cols
}

fn sortable(t: &DataType) -> bool {
    use DataType::*;
    match t {
        Map(_, _) | Union(_, _) | Null => false,
        List(f) | LargeList(f) | FixedSizeList(f, _) | ListView(f) | LargeListView(f) => sortable(f.data_type()),
        Struct(fields) => fields.iter().all(|f| sortable(f.data_type())),
        _ => true,
    }
}

/// Estimated bytes per row before compression, from the column types
/// (partition columns are not in the files).
pub fn row_width(schema: &Schema, partition_by: &[String]) -> u64 {
    fn width(t: &DataType) -> u64 {
        use DataType::*;
        match t {
            Boolean | Int8 | UInt8 => 1,
            Int16 | UInt16 | Float16 => 2,
            Int32 | UInt32 | Float32 | Date32 | Time32(_) => 4,
            Int64 | UInt64 | Float64 | Date64 | Time64(_) | Timestamp(_, _) | Duration(_) => 8,
            Decimal128(_, _) | Interval(_) => 16,
            Decimal256(_, _) => 32,
            Struct(fields) => fields.iter().map(|f| width(f.data_type())).sum(),
            // Strings, binaries and nested lists: an average guess.
            _ => 32,
        }
    }
    schema
        .fields()
        .iter()
        .filter(|f| !partition_by.contains(f.name()))
        .map(|f| width(f.data_type()))
        .sum::<u64>()
        .max(1)
}

/// Rows per file for the target size: whole row groups, at least one.
pub fn rows_per_file(layout: &Layout, schema: &Schema, partition_by: &[String]) -> usize {
    let rows = (layout.target_file_size / row_width(schema, partition_by)) as usize;
    let groups = (rows / layout.row_group_rows).max(1);
    groups * layout.row_group_rows
}

/// The writer options of a layout on top of crmflow's defaults.
pub fn apply(layout: &Layout, opts: &mut TableParquetOptions) {
    opts.global.max_row_group_size = layout.row_group_rows;
    for c in &layout.bloom_filters {
        let o = opts.column_specific_options.entry(c.clone()).or_default();
        o.bloom_filter_enabled = Some(true);
        // At most one row group's rows are distinct within a row group.
        o.bloom_filter_ndv = Some(layout.row_group_rows as u64);
        o.bloom_filter_fpp = Some(0.01);
    }
}

/// The name of the partition-value function ([`hive_value_udf`]).
pub const HIVE_VALUE: &str = "crmflow_hive_partition_value";

/// A string column's values as Hive directory values ([`hive_escape`]).
pub fn hive_value_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(HiveValue {
        signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct HiveValue {
    signature: Signature,
}

impl ScalarUDFImpl for HiveValue {
    fn name(&self) -> &str {
        HIVE_VALUE
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let values = args.args[0].to_array(args.number_rows)?;
        let values = datafusion::common::cast::as_string_array(&values)?;
        let out: StringArray = (0..values.len())
            .map(|i| Some(hive_escape((!values.is_null(i)).then(|| values.value(i)))))
            .collect();
        Ok(ColumnarValue::Array(std::sync::Arc::new(out) as ArrayRef))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_as_hive_does() {
        assert_eq!(hive_escape(Some("München")), "München");
        assert_eq!(hive_escape(Some("a/b")), "a%2Fb");
        assert_eq!(hive_escape(Some("50%")), "50%25");
        assert_eq!(hive_escape(Some("a=b")), "a%3Db");
        assert_eq!(hive_escape(Some("")), HIVE_DEFAULT_PARTITION);
        assert_eq!(hive_escape(None), HIVE_DEFAULT_PARTITION);
        assert_eq!(
            hive_escape(Some("\"#%'*/:=?\\{[]^\u{7F}\u{1}\t\n")),
            "%22%23%25%27%2A%2F%3A%3D%3F%5C%7B%5B%5D%5E%7F%01%09%0A"
        );
        // Not escaped by Hive: space, `}`, `~`, `<>|`, `&+,;@$!()`.
        assert_eq!(hive_escape(Some(" }~<>|&+,;@$!()`")), " }~<>|&+,;@$!()`");
    }

    #[test]
    fn unescapes_as_hive_does() {
        for v in ["München", "a/b", "50%", "a=b", "\"#%'*/:=?\\{[]^\u{7F}\u{1}", " }~"] {
            assert_eq!(hive_unescape(&hive_escape(Some(v))).as_deref(), Some(v));
        }
        assert_eq!(hive_unescape(HIVE_DEFAULT_PARTITION), None);
        // A `%` without two hex digits after it stays.
        assert_eq!(hive_unescape("50%").as_deref(), Some("50%"));
        assert_eq!(hive_unescape("5%zz").as_deref(), Some("5%zz"));
        assert_eq!(hive_unescape("%4").as_deref(), Some("%4"));
    }
}
