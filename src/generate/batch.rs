//! A generated chunk's rows in compact columnar form ([`Chunk`]), and
//! building Arrow record batches from them one row group at a time.
//!
//! [`super::model`] fills a [`Chunk`]; [`super::io`] asks it for batches in
//! the schemas of [`super::schema`]. String columns are kept as small codes
//! into the model's vocabularies until a batch is built; global ids
//! (`transaction_id`, `interaction_id`) are assigned here from a base that
//! the driver carries from chunk to chunk.

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;

use super::schema::{CATEGORIES, CHANNELS, COUNTRIES, GENDERS, KINDS};

/// One chunk of generated rows, kept compact (small codes for strings)
/// until it is written one row group at a time.
pub(super) struct Chunk {
    pub(super) index: u64,
    pub(super) first_customer_id: i64,
    pub(super) c_signup: Vec<i32>,
    pub(super) c_country: Vec<u8>,
    pub(super) c_age: Vec<i32>,
    pub(super) c_gender: Vec<u8>,
    pub(super) c_income: Vec<f64>,
    pub(super) c_acq: Vec<f64>,
    pub(super) c_channel: Vec<u8>,
    /// Still alive at the window end (not written; used by tests).
    pub(super) c_alive: Vec<bool>,
    pub(super) t_customer: Vec<i64>,
    pub(super) t_ts: Vec<i64>,
    pub(super) t_amount: Vec<f64>,
    pub(super) t_qty: Vec<i32>,
    pub(super) t_cat: Vec<u8>,
    pub(super) i_customer: Vec<i64>,
    pub(super) i_ts: Vec<i64>,
    pub(super) i_kind: Vec<u8>,
    pub(super) i_dur: Vec<i32>,
}

impl Chunk {
    /// An empty chunk `index` for `n` customers from `first_customer_id` on,
    /// with room for the usual number of rows per customer.
    pub(super) fn with_capacity(index: u64, first_customer_id: i64, n: usize) -> Self {
        let rows = n * 12;
        Chunk {
            index,
            first_customer_id,
            c_signup: Vec::with_capacity(n),
            c_country: Vec::with_capacity(n),
            c_age: Vec::with_capacity(n),
            c_gender: Vec::with_capacity(n),
            c_income: Vec::with_capacity(n),
            c_acq: Vec::with_capacity(n),
            c_channel: Vec::with_capacity(n),
            c_alive: Vec::with_capacity(n),
            t_customer: Vec::with_capacity(rows),
            t_ts: Vec::with_capacity(rows),
            t_amount: Vec::with_capacity(rows),
            t_qty: Vec::with_capacity(rows),
            t_cat: Vec::with_capacity(rows),
            i_customer: Vec::with_capacity(rows),
            i_ts: Vec::with_capacity(rows),
            i_kind: Vec::with_capacity(rows),
            i_dur: Vec::with_capacity(rows),
        }
    }

    /// Gives back the over-reserved row capacity (cheap for large vectors).
    pub(super) fn shrink_to_fit(&mut self) {
        self.t_customer.shrink_to_fit();
        self.t_ts.shrink_to_fit();
        self.t_amount.shrink_to_fit();
        self.t_qty.shrink_to_fit();
        self.t_cat.shrink_to_fit();
        self.i_customer.shrink_to_fit();
        self.i_ts.shrink_to_fit();
        self.i_kind.shrink_to_fit();
        self.i_dur.shrink_to_fit();
    }

    /// Number of rows of table `table` (index into [`super::TABLES`]).
    pub(super) fn rows(&self, table: usize) -> usize {
        match table {
            0 => self.c_signup.len(),
            1 => self.t_ts.len(),
            _ => self.i_ts.len(),
        }
    }

    /// Rows `r` of table `table` as a batch; ids are `id_base + row + 1`.
    pub(super) fn batch(
        &self,
        table: usize,
        schema: &SchemaRef,
        r: Range<usize>,
        id_base: u64,
    ) -> Result<RecordBatch, ArrowError> {
        fn strings(codes: &[u8], names: &[&str]) -> ArrayRef {
            Arc::new(StringArray::from_iter_values(codes.iter().map(|&c| names[c as usize])))
        }
        fn ts(v: &[i64]) -> ArrayRef {
            Arc::new(TimestampMicrosecondArray::from(v.to_vec()).with_timezone("UTC"))
        }
        let ids = |base: i64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(
                (r.start as i64..r.end as i64).map(|i| base + i + 1),
            ))
        };
        let columns: Vec<ArrayRef> = match table {
            0 => vec![
                ids(self.first_customer_id - 1),
                Arc::new(Date32Array::from(self.c_signup[r.clone()].to_vec())),
                strings(&self.c_country[r.clone()], &COUNTRIES),
                Arc::new(Int32Array::from(self.c_age[r.clone()].to_vec())),
                strings(&self.c_gender[r.clone()], &GENDERS),
                Arc::new(Float64Array::from(self.c_income[r.clone()].to_vec())),
                Arc::new(Float64Array::from(self.c_acq[r.clone()].to_vec())),
                strings(&self.c_channel[r.clone()], &CHANNELS),
            ],
            1 => vec![
                ids(id_base as i64),
                Arc::new(Int64Array::from(self.t_customer[r.clone()].to_vec())),
                ts(&self.t_ts[r.clone()]),
                Arc::new(Float64Array::from(self.t_amount[r.clone()].to_vec())),
                Arc::new(Int32Array::from(self.t_qty[r.clone()].to_vec())),
                strings(&self.t_cat[r.clone()], &CATEGORIES),
            ],
            _ => vec![
                ids(id_base as i64),
                Arc::new(Int64Array::from(self.i_customer[r.clone()].to_vec())),
                ts(&self.i_ts[r.clone()]),
                strings(&self.i_kind[r.clone()], &KINDS),
                Arc::new(Int32Array::from(self.i_dur[r.clone()].to_vec())),
            ],
        };
        RecordBatch::try_new(Arc::clone(schema), columns)
    }
}
