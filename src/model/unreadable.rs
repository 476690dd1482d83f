//! Rows of a layer's table that cannot be served: cells riskmap cannot read, or a
//! geometry of the wrong type or failing the checks (written by another tool).
//! They are skipped, never indexed, and reported (`/health`, `/metrics`, the log).

use std::collections::BTreeMap;

/// One row that is not served, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadableRow {
    pub fid: i64,
    /// The row's id, when it is readable text.
    pub id: Option<String>,
    pub reason: String,
}

/// A layer's unreadable rows, by id (by fid for rows whose id is unreadable: the
/// change feed names features by id, so those only change at a reload).
#[derive(Debug, Default)]
pub struct UnreadableRows {
    rows: BTreeMap<RowKey, UnreadableRow>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum RowKey {
    Id(String),
    Fid(i64),
}

fn key(row: &UnreadableRow) -> RowKey {
    match &row.id {
        Some(id) => RowKey::Id(id.clone()),
        None => RowKey::Fid(row.fid),
    }
}

impl UnreadableRows {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// In id order, then rows without a readable id by fid.
    pub fn iter(&self) -> impl Iterator<Item = &UnreadableRow> {
        self.rows.values()
    }

    /// Records a row; true when it was not known as it is (the caller logs it).
    pub fn insert(&mut self, row: UnreadableRow) -> bool {
        let k = key(&row);
        self.rows.insert(k, row.clone()).as_ref() != Some(&row)
    }

    /// Forgets the row with this id (deleted, or readable again).
    pub fn remove_id(&mut self, id: &str) {
        self.rows.remove(&RowKey::Id(id.to_string()));
    }

    /// Replaces every row (the layer was read whole); returns the rows not known
    /// before, for the log.
    pub fn replace(&mut self, rows: Vec<UnreadableRow>) -> Vec<UnreadableRow> {
        let old = std::mem::take(&mut self.rows);
        let mut new = Vec::new();
        for row in rows {
            let k = key(&row);
            if old.get(&k) != Some(&row) {
                new.push(row.clone());
            }
            self.rows.insert(k, row);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(fid: i64, id: Option<&str>, reason: &str) -> UnreadableRow {
        UnreadableRow {
            fid,
            id: id.map(str::to_string),
            reason: reason.into(),
        }
    }

    #[test]
    fn rows_are_known_by_id_or_fid_and_reported_new_once() {
        let mut u = UnreadableRows::default();
        assert!(u.insert(row(1, Some("a"), "NaN")));
        assert!(
            !u.insert(row(1, Some("a"), "NaN")),
            "known: not logged again"
        );
        assert!(
            u.insert(row(1, Some("a"), "out of range")),
            "a new reason is news"
        );
        assert!(u.insert(row(2, None, "id is not UTF-8")));
        assert_eq!(u.len(), 2);
        u.remove_id("a");
        assert_eq!(u.len(), 1);
        let new = u.replace(vec![
            row(2, None, "id is not UTF-8"),
            row(3, Some("c"), "x"),
        ]);
        assert_eq!(new, [row(3, Some("c"), "x")]);
        assert_eq!(u.iter().count(), 2);
    }
}
