//! Reading and writing features in layer tables.

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, ToSql, params_from_iter};

use super::schema::q;
use super::{Store, StoreError, Tx, blob, now_timestamp};
use crate::model::geometry::check_stored;
use crate::model::{
    Bbox, Feature, FeatureRef, LayerDef, PropertyType, UnreadableRow, Value,
    ValueRef as ModelValueRef,
};

pub use crate::model::StoredFeature;

/// What an import's upsert did to one feature.
#[derive(Clone, Debug, PartialEq)]
pub enum UpsertOutcome {
    Added,
    /// The stored feature differed and was overwritten; `before` is what it was (read
    /// by the comparison itself, for the audit trail), or why it could not be read
    /// (a row another tool wrote, which the import replaces).
    Updated {
        before: Result<Feature, String>,
    },
    /// The stored feature was already identical: nothing written.
    Unchanged,
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(*b as i64)),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Float(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

/// `fid, id, geom, p1, p2, ...` in the layer's property order.
fn columns(layer: &LayerDef) -> String {
    let mut cols = vec![
        "\"fid\"".to_string(),
        q(&layer.id_property),
        "\"geom\"".to_string(),
    ];
    cols.extend(layer.properties.iter().map(|p| q(&p.name)));
    cols.join(", ")
}

fn select_by_id_sql(layer: &LayerDef) -> String {
    format!(
        "SELECT {} FROM {} WHERE {} = ?1",
        columns(layer),
        q(&layer.name),
        q(&layer.id_property)
    )
}

/// The stored row of `f`'s id against `f` (`new_blob`: its geometry encoded):
/// `None` when absent, `Some((fid, None))` when identical, `Some((fid, Some(before)))`
/// when it differs (`before`: the stored feature, or why it cannot be read).
#[allow(clippy::type_complexity)]
fn compare_stored(
    conn: &Connection,
    sql: &str,
    layer: &LayerDef,
    f: &Feature,
    new_blob: &[u8],
) -> Result<Option<(i64, Option<Result<Feature, String>>)>, StoreError> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(StoreError::sqlite("preparing a lookup"))?;
    let lookup = || |e| StoreError::sqlite(format!("looking up {}", f.id))(e);
    let mut rows = stmt.query([&f.id]).map_err(lookup())?;
    let Some(row) = rows.next().map_err(lookup())? else {
        return Ok(None);
    };
    let fid: i64 = row.get(0).map_err(lookup())?;
    let mut same = matches!(row.get_ref(2).map_err(lookup())?,
        ValueRef::Blob(b) if b == new_blob);
    for (i, (p, v)) in layer.properties.iter().zip(&f.values).enumerate() {
        if !same {
            break;
        }
        same = read_value(row.get_ref(3 + i).map_err(lookup())?, p.ty).is_ok_and(|old| old == *v);
    }
    let before = if same {
        None
    } else {
        match row_to_feature(layer, row, Read::Edit) {
            Ok(sf) => Some(Ok(sf.feature)),
            Err(StoreError::BadRow { reason, .. }) => Some(Err(reason)),
            Err(e) => return Err(e),
        }
    };
    Ok(Some((fid, before)))
}

/// A layer as it was when the snapshot was taken, read on a connection of its own
/// (no lock: SQLite's WAL keeps the snapshot while writers go on), with the change
/// feed's position then. An import compares its features with it before it takes the
/// writer, so that only what changed is written under it.
pub struct Snapshot {
    conn: Connection,
    sql: String,
    /// The change feed's last sequence number in the snapshot.
    pub feed_seq: i64,
}

/// How a feature compares with a [`Snapshot`].
pub enum Compared {
    Absent,
    Same,
    Differs,
}

impl Store {
    /// A [`Snapshot`] of `layer`.
    pub fn snapshot(&self, layer: &LayerDef) -> Result<Snapshot, StoreError> {
        let conn = self.open_reader()?;
        conn.execute_batch("BEGIN")
            .map_err(StoreError::sqlite("starting a read"))?;
        // The first read fixes the snapshot: the feed position and the rows compared
        // later come from the same moment.
        let feed_seq = super::audit::feed_seq(&conn)?;
        Ok(Snapshot {
            conn,
            sql: select_by_id_sql(layer),
            feed_seq,
        })
    }
}

impl Snapshot {
    /// How `f` compares with its id's row in the snapshot.
    pub fn compare(&self, layer: &LayerDef, f: &Feature) -> Result<Compared, StoreError> {
        let blob = blob::encode(&f.geometry);
        Ok(
            match compare_stored(&self.conn, &self.sql, layer, f, &blob)? {
                None => Compared::Absent,
                Some((_, None)) => Compared::Same,
                Some((_, Some(_))) => Compared::Differs,
            },
        )
    }
}

impl Tx<'_> {
    /// Ids of `layer`'s features the change feed names after `seq`, or `None` when an
    /// entry there is not about one feature (a reload: another import), or the feed
    /// was pruned past `seq`.
    pub fn layer_changes_since(
        &self,
        layer: &str,
        seq: i64,
    ) -> Result<Option<hashbrown::HashSet<String>>, StoreError> {
        let err = StoreError::sqlite("reading the change feed");
        let min: i64 = self
            .conn()
            .query_row(
                "SELECT coalesce(min(seq), 0) FROM riskmap_changes",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        if min > seq + 1 {
            return Ok(None);
        }
        let mut stmt = self
            .conn()
            .prepare("SELECT feature_id FROM riskmap_changes WHERE seq > ?1 AND layer = ?2")
            .map_err(StoreError::sqlite("reading the change feed"))?;
        let rows = stmt
            .query_map(rusqlite::params![seq, layer], |r| {
                r.get::<_, Option<String>>(0)
            })
            .map_err(StoreError::sqlite("reading the change feed"))?;
        let mut ids = hashbrown::HashSet::new();
        for id in rows {
            match id.map_err(StoreError::sqlite("reading the change feed"))? {
                Some(id) => {
                    ids.insert(id);
                }
                None => return Ok(None),
            }
        }
        Ok(Some(ids))
    }
}

/// Reads a cell as the declared type, tolerating what other GeoPackage writers (QGIS)
/// may leave: integers in REAL columns, numbers in TEXT columns.
fn read_value(v: ValueRef<'_>, ty: PropertyType) -> Result<Value, String> {
    Ok(match (v, ty) {
        (ValueRef::Null, _) => Value::Null,
        (ValueRef::Integer(i), PropertyType::Integer) => Value::Int(i),
        (ValueRef::Integer(i), PropertyType::Boolean) => Value::Bool(i != 0),
        (ValueRef::Integer(i), PropertyType::Float) => Value::Float(i as f64),
        (ValueRef::Real(f), PropertyType::Float) if f.is_finite() => Value::Float(f),
        (ValueRef::Real(f), PropertyType::Integer) if f.fract() == 0.0 && f.abs() < 9.2e18 => {
            Value::Int(f as i64)
        }
        (ValueRef::Text(t), PropertyType::String | PropertyType::Date | PropertyType::DateTime) => {
            Value::Text(
                std::str::from_utf8(t)
                    .map_err(|_| "text is not UTF-8".to_string())?
                    .to_string(),
            )
        }
        (ValueRef::Integer(i), PropertyType::String) => Value::Text(i.to_string()),
        (ValueRef::Real(f), PropertyType::String) => Value::Text(f.to_string()),
        (other, ty) => {
            return Err(format!(
                "a {:?} value in a {} column",
                other.data_type(),
                ty.config_name()
            ));
        }
    })
}

/// How far a row read from the store is trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    /// To be served: the geometry must conform to the layer and pass the checks
    /// ([`check_stored`]).
    Serve,
    /// The current row for an edit: decoded only, so that an edit can replace or
    /// delete a row the server does not serve.
    Edit,
}

fn bad_row(layer: &LayerDef, fid: i64, id: Option<&str>, reason: String) -> StoreError {
    StoreError::BadRow {
        layer: layer.name.clone(),
        fid,
        id: id.map(str::to_string),
        reason,
    }
}

/// The id cell as text: `Ok(None)` for another type than TEXT.
fn text_id<'r>(layer: &LayerDef, fid: i64, v: ValueRef<'r>) -> Result<Option<&'r str>, StoreError> {
    match v {
        ValueRef::Text(t) => std::str::from_utf8(t).map(Some).map_err(|_| {
            let lossy = String::from_utf8_lossy(t);
            bad_row(layer, fid, None, format!("id is not UTF-8 ({lossy:?})"))
        }),
        _ => Ok(None),
    }
}

/// Geometry blobs from this size (64 KiB, some 4,000 vertices) may have data kept
/// beside their row in `riskmap_derived`: what riskmap derived from the geometry when
/// it stored it (the index's vertex importances, whose computation and the geometry's
/// full check take seconds for a million vertices and would otherwise be paid again at
/// every start). Smaller ones are cheap to check and derive, and are not looked up.
pub const KEPT_FROM_BYTES: usize = 64 * 1024;

/// Finds, during a scan, the data kept with a large geometry blob, and only when the
/// blob is byte for byte the one it was derived from (same length and CRC-32): a row
/// that another tool changed since is checked and derived afresh.
struct Kept<'c> {
    stmt: Option<rusqlite::CachedStatement<'c>>,
}

impl<'c> Kept<'c> {
    fn none() -> Kept<'static> {
        Kept { stmt: None }
    }

    /// Lookups over `conn` for a layer that can keep data (points never do).
    fn over(conn: &'c Connection, layer: &LayerDef) -> Result<Kept<'c>, StoreError> {
        if layer.geometry.is_point() {
            return Ok(Kept { stmt: None });
        }
        let stmt = conn
            .prepare_cached(
                "SELECT geom_bytes, geom_crc32, data FROM riskmap_derived WHERE layer = ?1 AND fid = ?2",
            )
            .map_err(StoreError::sqlite("preparing a lookup of derived data"))?;
        Ok(Kept { stmt: Some(stmt) })
    }

    fn find(
        &mut self,
        layer: &LayerDef,
        fid: i64,
        geom: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(stmt) = self.stmt.as_mut().filter(|_| geom.len() >= KEPT_FROM_BYTES) else {
            return Ok(None);
        };
        let found: Option<(i64, i64, Vec<u8>)> = stmt
            .query_row(rusqlite::params![layer.name, fid], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(StoreError::sqlite("reading derived data"))?;
        Ok(found.and_then(|(bytes, crc, data)| {
            (bytes == geom.len() as i64 && crc == i64::from(crc32fast::hash(geom))).then_some(data)
        }))
    }
}

/// The geometry cell decoded, and, read to be served, brought to the layer's type and
/// checked, unless data kept with it says riskmap stored this very blob (every
/// geometry riskmap stores passed the same check); then the kept data is returned too.
fn geometry_cell(
    layer: &LayerDef,
    fid: i64,
    id: &str,
    v: ValueRef<'_>,
    read: Read,
    kept: &mut Kept<'_>,
) -> Result<(geo_types::Geometry, Option<Vec<u8>>), StoreError> {
    let bad = |reason: String| bad_row(layer, fid, Some(id), reason);
    let (g, b) = match v {
        ValueRef::Blob(b) => (
            blob::decode(b).map_err(|e| bad(format!("geometry: {e}")))?,
            b,
        ),
        other => return Err(bad(format!("geom is {:?}, not a blob", other.data_type()))),
    };
    match read {
        Read::Serve => match kept.find(layer, fid, b)? {
            Some(data) => layer
                .geometry
                .conform(g)
                .map(|g| (g, Some(data)))
                .map_err(|e| bad(format!("geometry: {e}"))),
            None => check_stored(layer.geometry, g)
                .map(|g| (g, None))
                .map_err(|e| bad(format!("geometry: {e}"))),
        },
        Read::Edit => Ok((g, None)),
    }
}

fn row_to_feature(
    layer: &LayerDef,
    row: &Row<'_>,
    read: Read,
) -> Result<StoredFeature, StoreError> {
    let fid: i64 = row.get(0).map_err(StoreError::sqlite("reading fid"))?;
    let cell = row.get_ref(1).map_err(StoreError::sqlite("reading id"))?;
    let id = match (text_id(layer, fid, cell)?, cell) {
        (Some(t), _) => t.to_string(),
        (None, ValueRef::Integer(i)) => i.to_string(),
        (None, other) => {
            return Err(bad_row(
                layer,
                fid,
                None,
                format!("id is {:?}", other.data_type()),
            ));
        }
    };
    let bad = |reason: String| bad_row(layer, fid, Some(&id), reason);
    let cell = row.get_ref(2).map_err(StoreError::sqlite("reading geom"))?;
    let (geometry, _) = geometry_cell(layer, fid, &id, cell, read, &mut Kept::none())?;
    let mut values = Vec::with_capacity(layer.properties.len());
    for (i, p) in layer.properties.iter().enumerate() {
        let v = row
            .get_ref(3 + i)
            .map_err(StoreError::sqlite("reading a property"))?;
        values.push(read_value(v, p.ty).map_err(|e| bad(format!("{}: {e}", p.name)))?);
    }
    Ok(StoredFeature {
        fid,
        feature: Feature {
            id,
            geometry,
            values,
        },
    })
}

/// A row read without copying (with the data kept with its geometry, if any): `None`
/// when a cell holds another type than declared (the caller converts through
/// [`row_to_feature`]).
#[allow(clippy::type_complexity)]
fn borrowed_row<'r>(
    layer: &LayerDef,
    row: &'r Row<'_>,
    kept: &mut Kept<'_>,
) -> Result<
    Option<(
        i64,
        &'r str,
        (geo_types::Geometry, Option<Vec<u8>>),
        Vec<ModelValueRef<'r>>,
    )>,
    StoreError,
> {
    let fid: i64 = row.get(0).map_err(StoreError::sqlite("reading fid"))?;
    let cell = row.get_ref(1).map_err(StoreError::sqlite("reading id"))?;
    let Some(id) = text_id(layer, fid, cell)? else {
        return Ok(None);
    };
    let bad = |reason: String| bad_row(layer, fid, Some(id), reason);
    let cell = row.get_ref(2).map_err(StoreError::sqlite("reading geom"))?;
    let geometry = geometry_cell(layer, fid, id, cell, Read::Serve, kept)?;
    let mut values = Vec::with_capacity(layer.properties.len());
    for (i, p) in layer.properties.iter().enumerate() {
        let v = row
            .get_ref(3 + i)
            .map_err(StoreError::sqlite("reading a property"))?;
        values.push(match (v, p.ty) {
            (ValueRef::Null, _) => ModelValueRef::Null,
            (ValueRef::Integer(i), PropertyType::Integer) => ModelValueRef::Int(i),
            (ValueRef::Integer(i), PropertyType::Boolean) => ModelValueRef::Bool(i != 0),
            (ValueRef::Real(f), PropertyType::Float) if f.is_finite() => ModelValueRef::Float(f),
            (
                ValueRef::Text(t),
                PropertyType::String | PropertyType::Date | PropertyType::DateTime,
            ) => ModelValueRef::Text(
                std::str::from_utf8(t)
                    .map_err(|_| bad(format!("{}: text is not UTF-8", p.name)))?,
            ),
            _ => return Ok(None),
        });
    }
    Ok(Some((fid, id, geometry, values)))
}

fn get_by_id(
    conn: &Connection,
    layer: &LayerDef,
    id: &str,
    read: Read,
) -> Result<Option<StoredFeature>, StoreError> {
    let sql = format!(
        "SELECT {} FROM {} WHERE {} = ?1",
        columns(layer),
        q(&layer.name),
        q(&layer.id_property)
    );
    let mut stmt = conn
        .prepare_cached(&sql)
        .map_err(StoreError::sqlite("preparing a read"))?;
    let mut rows = stmt
        .query([id])
        .map_err(StoreError::sqlite("reading a feature"))?;
    match rows
        .next()
        .map_err(StoreError::sqlite("reading a feature"))?
    {
        Some(row) => row_to_feature(layer, row, read).map(Some),
        None => Ok(None),
    }
}

impl Store {
    /// Streams every servable feature of a layer, in fid order, over `conn` (from
    /// [`Store::open_reader`]) inside one read transaction, so the rows are a consistent
    /// snapshot. `f` sees each feature once, borrowed from SQLite's row buffer: text is
    /// not copied (millions of sensors load in seconds). Rows that cannot be served
    /// (unreadable cells, a geometry of the wrong type or failing the checks) are
    /// skipped and returned. With a feature comes the data riskmap kept with its
    /// geometry when it stored it (see [`Tx::insert_feature`]), if the geometry is
    /// still the one it was derived from.
    pub fn scan_layer(
        &self,
        conn: &mut Connection,
        layer: &LayerDef,
        f: impl FnMut(i64, FeatureRef<'_>, Option<&[u8]>),
    ) -> Result<Vec<UnreadableRow>, StoreError> {
        self.scan_layer_snapshot(conn, layer, f)
            .map(|(skipped, _)| skipped)
    }

    /// [`Store::scan_layer`], also returning the newest change-feed sequence number of
    /// the snapshot read: every change after it is missing from what `f` saw.
    pub fn scan_layer_snapshot(
        &self,
        conn: &mut Connection,
        layer: &LayerDef,
        mut f: impl FnMut(i64, FeatureRef<'_>, Option<&[u8]>),
    ) -> Result<(Vec<UnreadableRow>, i64), StoreError> {
        let mut skipped = Vec::new();
        let tx = conn
            .transaction()
            .map_err(StoreError::sqlite("starting a read"))?;
        // The first read of a transaction fixes its snapshot: the feed position and the
        // rows below come from the same moment.
        let feed_seq = super::audit::feed_seq(&tx)?;
        {
            let sql = format!(
                "SELECT {} FROM {} ORDER BY fid",
                columns(layer),
                q(&layer.name)
            );
            let mut stmt = tx
                .prepare(&sql)
                .map_err(|e| self.corrupt_or(e, "reading", layer))?;
            let mut kept = Kept::over(&tx, layer)?;
            let mut rows = stmt
                .query([])
                .map_err(|e| self.corrupt_or(e, "reading", layer))?;
            while let Some(row) = rows
                .next()
                .map_err(|e| self.corrupt_or(e, "reading", layer))?
            {
                match borrowed_row(layer, row, &mut kept) {
                    Ok(Some((fid, id, (geometry, data), values))) => f(
                        fid,
                        FeatureRef {
                            id,
                            geometry: &geometry,
                            values: &values,
                        },
                        data.as_deref(),
                    ),
                    Err(e) => skipped.push(e.into_unreadable()?),
                    Ok(None) => {
                        // Cells another tool stored in another type: convert, owned.
                        let sf = match row_to_feature(layer, row, Read::Serve) {
                            Ok(sf) => sf,
                            Err(e) => {
                                skipped.push(e.into_unreadable()?);
                                continue;
                            }
                        };
                        let values: Vec<ModelValueRef<'_>> =
                            sf.feature.values.iter().map(|v| v.as_ref()).collect();
                        f(
                            sf.fid,
                            FeatureRef {
                                id: &sf.feature.id,
                                geometry: &sf.feature.geometry,
                                values: &values,
                            },
                            None,
                        );
                    }
                }
            }
        }
        tx.finish().map_err(StoreError::sqlite("ending a read"))?;
        Ok((skipped, feed_seq))
    }

    /// Like [`Store::scan_layer`], with owned features.
    pub fn load_layer(
        &self,
        conn: &mut Connection,
        layer: &LayerDef,
        mut f: impl FnMut(StoredFeature),
    ) -> Result<Vec<UnreadableRow>, StoreError> {
        self.scan_layer(conn, layer, |fid, r, _| {
            f(StoredFeature {
                fid,
                feature: Feature {
                    id: r.id.to_string(),
                    geometry: r.geometry.clone(),
                    values: r.values.iter().map(|v| v.into_owned()).collect(),
                },
            })
        })
    }

    fn corrupt_or(&self, e: rusqlite::Error, doing: &str, layer: &LayerDef) -> StoreError {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
                StoreError::Corrupt {
                    path: self.path.clone(),
                    detail: format!("while {doing} layer {}: {e}", layer.name),
                }
            }
            _ => StoreError::sqlite(format!("{doing} layer {}", layer.name))(e),
        }
    }

    /// One feature by id, over the shared reader, checked as [`Store::scan_layer`]
    /// checks rows: [`StoreError::BadRow`] for a row that cannot be served.
    pub fn get_feature(
        &self,
        layer: &LayerDef,
        id: &str,
    ) -> Result<Option<StoredFeature>, StoreError> {
        self.read(|conn| get_by_id(conn, layer, id, Read::Serve))
    }

    /// Number of rows in the layer's table.
    pub fn count(&self, layer: &LayerDef) -> Result<u64, StoreError> {
        self.read(|conn| {
            conn.query_row(
                &format!("SELECT count(*) FROM {}", q(&layer.name)),
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(StoreError::sqlite("counting"))
        })
    }
}

impl Tx<'_> {
    /// The current row for an edit: its cells decoded, its geometry not checked, so
    /// that an edit can replace or delete a row the server does not serve.
    pub fn get_feature(
        &self,
        layer: &LayerDef,
        id: &str,
    ) -> Result<Option<StoredFeature>, StoreError> {
        get_by_id(self.conn(), layer, id, Read::Edit)
    }

    /// Keeps `kept` beside row `fid` (a layer of lines or polygons, a geometry blob of
    /// at least [`KEPT_FROM_BYTES`]) with the blob's length and CRC-32, or forgets
    /// what was kept for the row. Every write of a row states it, so nothing riskmap
    /// keeps outlives the geometry it was derived from (fids can be reused).
    fn keep(
        &self,
        layer: &LayerDef,
        fid: i64,
        geom: &[u8],
        kept: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        if layer.geometry.is_point() {
            return Ok(());
        }
        let done = match kept.filter(|_| geom.len() >= KEPT_FROM_BYTES) {
            Some(data) => self
                .conn()
                .prepare_cached(
                    "INSERT OR REPLACE INTO riskmap_derived VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .and_then(|mut s| {
                    s.execute(rusqlite::params![
                        layer.name,
                        fid,
                        geom.len() as i64,
                        i64::from(crc32fast::hash(geom)),
                        data
                    ])
                }),
            None => self
                .conn()
                .prepare_cached("DELETE FROM riskmap_derived WHERE layer = ?1 AND fid = ?2")
                .and_then(|mut s| s.execute(rusqlite::params![layer.name, fid])),
        };
        done.map(|_| ())
            .map_err(StoreError::sqlite("keeping derived data"))
    }

    /// Inserts a feature whose id is not in the layer yet; returns its fid. `kept`:
    /// what the index derived from a large geometry (opaque here), kept beside the row
    /// so that loading the layer need neither check nor derive it again; see
    /// [`Store::scan_layer`].
    pub fn insert_feature(
        &self,
        layer: &LayerDef,
        f: &Feature,
        kept: Option<&[u8]>,
    ) -> Result<i64, StoreError> {
        let sql = self.sql("insert", &layer.name, || {
            let mut names = vec![q(&layer.id_property), "\"geom\"".to_string()];
            names.extend(layer.properties.iter().map(|p| q(&p.name)));
            let marks: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
            format!(
                "INSERT INTO {} ({}) VALUES ({})",
                q(&layer.name),
                names.join(", "),
                marks.join(", ")
            )
        });
        let geom = blob::encode(&f.geometry);
        let mut stmt = self
            .conn()
            .prepare_cached(&sql)
            .map_err(StoreError::sqlite("preparing an insert"))?;
        let id = Value::Text(f.id.clone());
        let args = [&id as &dyn ToSql, &geom as &dyn ToSql]
            .into_iter()
            .chain(f.values.iter().map(|v| v as &dyn ToSql));
        stmt.execute(params_from_iter(args))
            .map_err(|e| StoreError::sqlite(format!("inserting {}", f.id))(e))?;
        let fid = self.conn().last_insert_rowid();
        // A new fid has no derived row to remove (AUTOINCREMENT never reuses one).
        if kept.is_some() {
            self.keep(layer, fid, &geom, kept)?;
        }
        Ok(fid)
    }

    /// Inserts features whose ids `layer`'s table does not hold (a staged load's
    /// chunk), several rows per statement: per-statement work (the statement's setup,
    /// the `AUTOINCREMENT` sequence's update) was most of the cost of a point's row.
    /// Features with a `kept` derived row go one by one (it needs their fid).
    /// Returns each row's fid, in the order of `rows`; a multi-row statement's are
    /// taken as consecutive, ending at the last one inserted (what SQLite does for an
    /// `AUTOINCREMENT` key with one writer; [`Store::fid_span`] lets the caller check).
    pub fn insert_new_features(
        &self,
        layer: &LayerDef,
        rows: &[(Feature, Option<Vec<u8>>)],
    ) -> Result<Vec<i64>, StoreError> {
        let mut fids = vec![0i64; rows.len()];
        const PER_STATEMENT: usize = 64;
        let ncols = 2 + layer.properties.len();
        let sql = self.sql("insert_many", &layer.name, || {
            let mut names = vec![q(&layer.id_property), "\"geom\"".to_string()];
            names.extend(layer.properties.iter().map(|p| q(&p.name)));
            let one = format!("({})", vec!["?"; ncols].join(", "));
            format!(
                "INSERT INTO {} ({}) VALUES {}",
                q(&layer.name),
                names.join(", "),
                vec![one.as_str(); PER_STATEMENT].join(", ")
            )
        });
        let plain: Vec<(usize, &Feature)> = rows
            .iter()
            .enumerate()
            .filter(|(_, (_, kept))| kept.is_none())
            .map(|(i, (f, _))| (i, f))
            .collect();
        let mut batches = plain.chunks_exact(PER_STATEMENT);
        if batches.len() > 0 {
            let mut stmt = self
                .conn()
                .prepare_cached(&sql)
                .map_err(StoreError::sqlite("preparing an insert"))?;
            for batch in &mut batches {
                for (j, (_, f)) in batch.iter().enumerate() {
                    let at = j * ncols;
                    let mut bind = |i: usize, v: &dyn ToSql| {
                        stmt.raw_bind_parameter(at + i + 1, v)
                            .map_err(|e| StoreError::sqlite(format!("inserting {}", f.id))(e))
                    };
                    bind(0, &f.id.as_str())?;
                    bind(1, &blob::encode(&f.geometry))?;
                    for (k, v) in f.values.iter().enumerate() {
                        bind(2 + k, v)?;
                    }
                }
                stmt.raw_execute()
                    .map_err(StoreError::sqlite(format!("inserting into {}", layer.name)))?;
                let last = self.conn().last_insert_rowid();
                for (j, (i, _)) in batch.iter().enumerate() {
                    fids[*i] = last - (PER_STATEMENT - 1 - j) as i64;
                }
            }
        }
        for (i, f) in batches.remainder() {
            fids[*i] = self.insert_feature(layer, f, None)?;
        }
        for (i, (f, kept)) in rows.iter().enumerate() {
            if kept.is_some() {
                fids[i] = self.insert_feature(layer, f, kept.as_deref())?;
            }
        }
        Ok(fids)
    }

    /// Overwrites the geometry and properties of row `fid` (`kept` as in
    /// [`Tx::insert_feature`]).
    pub fn update_feature(
        &self,
        layer: &LayerDef,
        fid: i64,
        f: &Feature,
        kept: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let sql = self.sql("update", &layer.name, || {
            let mut sets = vec!["\"geom\" = ?2".to_string()];
            sets.extend(
                layer
                    .properties
                    .iter()
                    .enumerate()
                    .map(|(i, p)| format!("{} = ?{}", q(&p.name), i + 3)),
            );
            format!(
                "UPDATE {} SET {} WHERE fid = ?1",
                q(&layer.name),
                sets.join(", ")
            )
        });
        let geom = blob::encode(&f.geometry);
        let mut stmt = self
            .conn()
            .prepare_cached(&sql)
            .map_err(StoreError::sqlite("preparing an update"))?;
        let args = [&fid as &dyn ToSql, &geom as &dyn ToSql]
            .into_iter()
            .chain(f.values.iter().map(|v| v as &dyn ToSql));
        stmt.execute(params_from_iter(args))
            .map_err(|e| StoreError::sqlite(format!("updating {}", f.id))(e))?;
        self.keep(layer, fid, &geom, kept)
    }

    /// Every row's fid and id (for an import that replaces the layer).
    pub fn ids(&self, layer: &LayerDef) -> Result<Vec<(i64, String)>, StoreError> {
        let sql = format!(
            "SELECT fid, {} FROM {}",
            q(&layer.id_property),
            q(&layer.name)
        );
        let mut stmt = self
            .conn()
            .prepare(&sql)
            .map_err(StoreError::sqlite("listing ids"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .map_err(StoreError::sqlite("listing ids"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::sqlite("listing ids"))
    }

    pub fn delete_feature(&self, layer: &LayerDef, fid: i64) -> Result<(), StoreError> {
        let sql = format!("DELETE FROM {} WHERE fid = ?1", q(&layer.name));
        self.conn()
            .prepare_cached(&sql)
            .and_then(|mut s| s.execute([fid]))
            .map_err(StoreError::sqlite("deleting"))?;
        self.keep(layer, fid, &[], None)
    }

    /// Insert or update by id, skipping the write when the stored row is identical
    /// (then only `kept` is written, as in [`Tx::insert_feature`]). One read of the
    /// stored row serves the comparison and, when it differs, the returned `before`.
    pub fn upsert(
        &self,
        layer: &LayerDef,
        f: &Feature,
        kept: Option<&[u8]>,
    ) -> Result<UpsertOutcome, StoreError> {
        let sql = self.sql("select_by_id", &layer.name, || select_by_id_sql(layer));
        let new_blob = blob::encode(&f.geometry);
        let existing = compare_stored(self.conn(), &sql, layer, f, &new_blob)?;
        match existing {
            None => {
                self.insert_feature(layer, f, kept)?;
                Ok(UpsertOutcome::Added)
            }
            Some((fid, None)) => {
                if kept.is_some() {
                    self.keep(layer, fid, &new_blob, kept)?;
                }
                Ok(UpsertOutcome::Unchanged)
            }
            Some((fid, Some(before))) => {
                self.update_feature(layer, fid, f, kept)?;
                Ok(UpsertOutcome::Updated { before })
            }
        }
    }

    /// Grows the layer's extent in `gpkg_contents` to hold `bbox` (extents there only
    /// grow: GeoPackage readers treat them as informative) and stamps `last_change`.
    pub fn touch_layer(&self, layer: &LayerDef, bbox: Option<Bbox>) -> Result<(), StoreError> {
        let (a, b, c, d) = match bbox {
            Some(b) => (
                Some(b.min_lon),
                Some(b.min_lat),
                Some(b.max_lon),
                Some(b.max_lat),
            ),
            None => (None, None, None, None),
        };
        self.conn()
            .execute(
                "UPDATE gpkg_contents SET last_change = ?2,
                   min_x = CASE WHEN ?3 IS NULL THEN min_x ELSE min(coalesce(min_x, ?3), ?3) END,
                   min_y = CASE WHEN ?4 IS NULL THEN min_y ELSE min(coalesce(min_y, ?4), ?4) END,
                   max_x = CASE WHEN ?5 IS NULL THEN max_x ELSE max(coalesce(max_x, ?5), ?5) END,
                   max_y = CASE WHEN ?6 IS NULL THEN max_y ELSE max(coalesce(max_y, ?6), ?6) END
                 WHERE table_name = ?1",
                rusqlite::params![layer.name, now_timestamp(), a, b, c, d],
            )
            .map_err(StoreError::sqlite("updating gpkg_contents"))?;
        Ok(())
    }
}

impl Store {
    /// The smallest and largest fid of `table` and its number of rows, read on a
    /// connection of its own (counting millions of rows takes a good part of a second:
    /// no lock is held, not even the shared reader).
    pub fn fid_span(&self, table: &str) -> Result<(i64, i64, i64), StoreError> {
        self.open_reader()?
            .query_row(
                &format!(
                    "SELECT coalesce(min(fid), 0), coalesce(max(fid), 0), count(*) FROM {}",
                    q(table)
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(StoreError::sqlite(format!("counting the rows of {table}")))
    }
}
