//! What the aggregate functions that keep each group's rows share
//! (`clv::rfm_days`, `day_gaps`): the group index of every logged row,
//! the counting sort that hands a summary its groups' rows in group order,
//! forgetting emitted groups, FILTER clauses, and the accumulator for a
//! query without GROUP BY. Each function keeps its own row columns beside
//! the group indices (flat vectors, no allocation per group).

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{Accumulator, EmitTo, GroupsAccumulator};

/// The group of every logged row, in arrival order, and the number of
/// groups seen.
#[derive(Debug, Default, Clone)]
pub struct Groups {
    group: Vec<u32>,
    groups: usize,
}

/// Logged rows of groups `0..n` in group order: group `g`'s are
/// `order[offsets[g]..offsets[g + 1]]` (indices into the log).
pub struct Grouped {
    pub offsets: Vec<usize>,
    pub order: Vec<u32>,
}

impl Groups {
    pub fn with_groups(groups: usize) -> Groups {
        Groups { group: vec![], groups }
    }

    /// Raises the number of groups to DataFusion's `total_num_groups`.
    pub fn grow(&mut self, total_num_groups: usize) {
        self.groups = self.groups.max(total_num_groups);
    }

    /// Logs a row of group `g`; `function` names the function in errors.
    pub fn push(&mut self, g: usize, function: &str) -> Result<()> {
        let Ok(g) = u32::try_from(g) else {
            return exec_err!("{function}: more than {} groups", u32::MAX);
        };
        if self.group.len() == u32::MAX as usize {
            return exec_err!("{function}: more than {} rows in one partition", u32::MAX);
        }
        self.group.push(g);
        Ok(())
    }

    /// The number of groups `emit_to` emits and their rows (a counting sort
    /// of row indices).
    pub fn emitted(&self, emit_to: EmitTo) -> (usize, Grouped) {
        let n = match emit_to {
            EmitTo::All => self.groups,
            EmitTo::First(n) => n.min(self.groups),
        };
        let mut offsets = vec![0usize; n + 1];
        for &g in &self.group {
            if (g as usize) < n {
                offsets[g as usize + 1] += 1;
            }
        }
        for g in 0..n {
            offsets[g + 1] += offsets[g];
        }
        let mut order = vec![0u32; offsets[n]];
        let mut at = offsets.clone();
        for (i, &g) in self.group.iter().enumerate() {
            if (g as usize) < n {
                order[at[g as usize]] = i as u32;
                at[g as usize] += 1;
            }
        }
        (n, Grouped { offsets, order })
    }

    /// Forgets the first `n` groups and renumbers the rest from 0. Each kept
    /// row moves from index `from` to `to` (`to <= from`, in increasing
    /// order): `keep(from, to)` moves the function's columns alike. Returns
    /// the number of rows kept, to which the columns are then truncated
    /// (when no group is left, the function drops its columns instead, see
    /// [`Groups::is_empty`]).
    pub fn forget(&mut self, n: usize, mut keep: impl FnMut(usize, usize)) -> usize {
        self.groups -= n;
        if self.groups == 0 {
            *self = Groups::default();
            return 0;
        }
        let mut kept = 0;
        for i in 0..self.group.len() {
            let g = self.group[i] as usize;
            if g >= n {
                self.group[kept] = (g - n) as u32;
                keep(i, kept);
                kept += 1;
            }
        }
        self.group.truncate(kept);
        kept
    }

    /// No group (left): the log holds nothing.
    pub fn is_empty(&self) -> bool {
        self.groups == 0
    }

    /// The bytes the group indices hold.
    pub fn size(&self) -> usize {
        self.group.capacity() * 4
    }
}

/// The rows `i` of a batch of `n` that a FILTER clause keeps.
pub fn kept(n: usize, filter: Option<&BooleanArray>) -> impl Iterator<Item = usize> + '_ {
    (0..n).filter(move |&i| filter.is_none_or(|f| f.is_valid(i) && f.value(i)))
}

/// A groups accumulator as the function without GROUP BY: one group.
#[derive(Debug)]
pub struct OneGroup<L>(pub L);

impl<L: GroupsAccumulator + Clone + std::fmt::Debug + Sync> Accumulator for OneGroup<L> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let n = values[0].len();
        self.0.update_batch(values, &vec![0; n], None, 1)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let n = states[0].len();
        self.0.merge_batch(states, &vec![0; n], 1)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let arrays = self.0.clone().state(EmitTo::All)?;
        arrays.iter().map(|a| ScalarValue::try_from_array(a, 0)).collect()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let array = self.0.clone().evaluate(EmitTo::All)?;
        ScalarValue::try_from_array(&array, 0)
    }

    fn size(&self) -> usize {
        size_of::<Self>() + GroupsAccumulator::size(&self.0)
    }
}
