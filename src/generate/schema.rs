//! What the generator accepts and what it writes: validation of
//! [`GenerateOptions`] into a day window, and the Arrow schemas of the three
//! tables (`customers/`, `transactions/`, `interactions/`).
//!
//! The model ([`super::model`]) starts from the validated [`Window`]; the
//! writer ([`super::io`]) and the batch builder ([`super::batch`]) use the
//! schemas, indexed like [`super::TABLES`].

use std::sync::Arc;

use chrono::DateTime;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

// Vocabularies of the string columns (codes in a `Chunk` index them).
pub(super) const COUNTRIES: [&str; 20] = [
    "US", "GB", "DE", "FR", "CA", "AU", "NL", "SE", "ES", "IT", "BR", "MX", "JP", "IN", "PL", "IE", "BE", "CH", "AT",
    "DK",
];
pub(super) const GENDERS: [&str; 3] = ["M", "F", "U"];
pub(super) const CHANNELS: [&str; 7] = [
    "organic",
    "paid_search",
    "social",
    "email",
    "referral",
    "affiliate",
    "display",
];
pub(super) const CATEGORIES: [&str; 15] = [
    "electronics",
    "apparel",
    "home",
    "beauty",
    "sports",
    "toys",
    "books",
    "grocery",
    "garden",
    "automotive",
    "health",
    "jewelry",
    "office",
    "pets",
    "music",
];
pub(super) const KINDS: [&str; 5] = [
    "web_visit",
    "email_open",
    "email_click",
    "support_ticket",
    "app_session",
];

use super::{GenerateError, GenerateOptions};

/// The observation window of valid options, in days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Window {
    /// First day of the window.
    pub(super) start_day: i64,
    /// Day after the last one (exclusive end).
    pub(super) end_day: i64,
}

/// Checks `opts` (at least one customer, not absurdly many, a non-empty
/// window within the Date32 range with room to spare) and returns its window.
pub(super) fn validate(opts: &GenerateOptions) -> Result<Window, GenerateError> {
    if opts.customers == 0 {
        return Err(GenerateError::InvalidOptions(
            "the number of customers must be at least 1".into(),
        ));
    }
    if opts.customers > i64::MAX as u64 / 1024 {
        return Err(GenerateError::InvalidOptions(format!(
            "{} customers is too many",
            opts.customers
        )));
    }
    if opts.start >= opts.end {
        return Err(GenerateError::InvalidOptions(format!(
            "the window start {} must be before its end {}",
            opts.start, opts.end
        )));
    }
    let epoch = DateTime::UNIX_EPOCH.date_naive();
    let start_day = opts.start.signed_duration_since(epoch).num_days();
    let end_day = opts.end.signed_duration_since(epoch).num_days();
    if start_day < i32::MIN as i64 / 2 || end_day > i32::MAX as i64 / 2 {
        return Err(GenerateError::InvalidOptions("the window is out of range".into()));
    }
    Ok(Window { start_day, end_day })
}

/// Arrow schema of `customers/`.
pub fn customers_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Int64, false),
        Field::new("signup_date", DataType::Date32, false),
        Field::new("country", DataType::Utf8, false),
        Field::new("age", DataType::Int32, false),
        Field::new("gender", DataType::Utf8, false),
        Field::new("income", DataType::Float64, false),
        Field::new("acquisition_cost", DataType::Float64, false),
        Field::new("channel", DataType::Utf8, false),
    ]))
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Arrow schema of `transactions/`.
pub fn transactions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("transaction_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, false),
        Field::new("transaction_ts", ts_type(), false),
        Field::new("amount", DataType::Float64, false),
        Field::new("quantity", DataType::Int32, false),
        Field::new("product_category", DataType::Utf8, false),
    ]))
}

/// Arrow schema of `interactions/`.
pub fn interactions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("interaction_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, false),
        Field::new("interaction_ts", ts_type(), false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("duration_s", DataType::Int32, false),
    ]))
}

/// Schema of table `t` (index into [`super::TABLES`]).
pub(super) fn table_schema(t: usize) -> SchemaRef {
    match t {
        0 => customers_schema(),
        1 => transactions_schema(),
        _ => interactions_schema(),
    }
}
