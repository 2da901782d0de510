//! SQLite statements stepped through the C API, for the scans a cold read spends its time in:
//! the listing's walk of every event's key and the bulk read of every event. Reading columns
//! here lets those loops compare session ids as bytes, read rowids without a type look-up and
//! skip rusqlite's per-read checks and conversions: ~40 M of a 6,600-session agent's ~2,330 M
//! instructions (the column reads themselves, mostly SQLite's own work, were ~5%).

use std::{
    ffi::{CStr, c_int},
    marker::PhantomData,
    ptr::NonNull,
};

use rusqlite::{Connection, ffi, types::ValueRef};

use super::sqlite_schema::SqliteError;

/// One prepared statement of a connection, finalized when dropped. Column reads borrow it, so
/// no value outlives the row it was read from.
pub(super) struct Stepper<'c> {
    stmt: NonNull<ffi::sqlite3_stmt>,
    db: *mut ffi::sqlite3,
    columns: c_int,
    on_row: bool,
    _conn: PhantomData<&'c Connection>,
}

impl<'c> Stepper<'c> {
    pub fn prepare(conn: &'c Connection, sql: &str) -> Result<Stepper<'c>, SqliteError> {
        // SAFETY: the connection's own handle, used only while `conn` is borrowed (`'c`).
        let db = unsafe { conn.handle() };
        let len = c_int::try_from(sql.len()).map_err(|_| SqliteError::Other("statement too long".into()))?;
        let mut stmt = std::ptr::null_mut();
        // SAFETY: `sql` is valid for `len` bytes; SQLite writes a statement or null to `stmt`.
        let rc =
            unsafe { ffi::sqlite3_prepare_v2(db, sql.as_ptr().cast(), len, &mut stmt, std::ptr::null_mut()) };
        if rc != ffi::SQLITE_OK {
            // SAFETY: finalizing null is a no-op; a statement made despite the error is freed.
            unsafe { ffi::sqlite3_finalize(stmt) };
            return Err(error(db, rc));
        }
        let stmt = NonNull::new(stmt).ok_or_else(|| SqliteError::Other("empty statement".into()))?;
        // SAFETY: a valid statement.
        let columns = unsafe { ffi::sqlite3_column_count(stmt.as_ptr()) };
        Ok(Stepper { stmt, db, columns, on_row: false, _conn: PhantomData })
    }

    /// Binds parameter `i` (from 1) to an integer.
    pub fn bind_int(&mut self, i: c_int, v: i64) -> Result<(), SqliteError> {
        // SAFETY: a valid statement; SQLite checks `i`.
        let rc = unsafe { ffi::sqlite3_bind_int64(self.stmt.as_ptr(), i, v) };
        self.check(rc)
    }

    /// Binds parameter `i` (from 1) to text, which SQLite copies.
    pub fn bind_text(&mut self, i: c_int, v: &str) -> Result<(), SqliteError> {
        let len = c_int::try_from(v.len()).map_err(|_| SqliteError::Other("parameter too long".into()))?;
        // SAFETY: `v` is valid for `len` bytes, and SQLITE_TRANSIENT has SQLite copy them
        // before the call returns.
        let rc = unsafe {
            ffi::sqlite3_bind_text(self.stmt.as_ptr(), i, v.as_ptr().cast(), len, ffi::SQLITE_TRANSIENT())
        };
        self.check(rc)
    }

    /// Makes the statement ready to run again, ending its read of the database (before the
    /// transaction it ran in ends).
    pub fn reset(&mut self) {
        self.on_row = false;
        // SAFETY: a valid statement. The error it may return is the last step's, already seen.
        unsafe { ffi::sqlite3_reset(self.stmt.as_ptr()) };
    }

    /// Moves to the next row: `false` once there is none.
    pub fn step(&mut self) -> Result<bool, SqliteError> {
        // SAFETY: a valid statement.
        let rc = unsafe { ffi::sqlite3_step(self.stmt.as_ptr()) };
        self.on_row = rc == ffi::SQLITE_ROW;
        match rc {
            ffi::SQLITE_ROW => Ok(true),
            ffi::SQLITE_DONE => Ok(false),
            rc => Err(error(self.db, rc)),
        }
    }

    /// Column `i` of the current row, as rusqlite's `get_ref` reads it (`Null` off a row or
    /// out of range).
    pub fn value(&self, i: c_int) -> ValueRef<'_> {
        if !self.on_row || !(0..self.columns).contains(&i) {
            return ValueRef::Null;
        }
        // The column's value is looked up once and read through the `sqlite3_value_*` calls:
        // each `sqlite3_column_*` call looks it up again and calls the connection's mutex
        // enter and leave (empty for a `NO_MUTEX` connection, still two calls), three times
        // for a text.
        // SAFETY: the statement is on a row and `i` is one of its columns. The value is
        // "unprotected" (SQLite holds no mutex for it), which only matters when another thread
        // uses the connection: every connection here is opened `NO_MUTEX` and used by one thread
        // at a time, and the statement is borrowed for the read. A text or blob pointer stays
        // valid until the next step, reset or finalize, each of which takes `&mut self` or
        // `self` while the returned value borrows `&self`. Its length is read after the
        // pointer, as SQLite asks.
        unsafe {
            let v = ffi::sqlite3_column_value(self.stmt.as_ptr(), i);
            match ffi::sqlite3_value_type(v) {
                ffi::SQLITE_INTEGER => ValueRef::Integer(ffi::sqlite3_value_int64(v)),
                ffi::SQLITE_FLOAT => ValueRef::Real(ffi::sqlite3_value_double(v)),
                ffi::SQLITE_TEXT => {
                    ValueRef::Text(bytes(ffi::sqlite3_value_text(v), ffi::sqlite3_value_bytes(v)))
                }
                ffi::SQLITE_BLOB => {
                    ValueRef::Blob(bytes(ffi::sqlite3_value_blob(v).cast(), ffi::sqlite3_value_bytes(v)))
                }
                _ => ValueRef::Null,
            }
        }
    }

    /// Column `i` as an integer: an error unless it is one (as rusqlite's `get::<i64>`).
    pub fn int(&self, i: c_int) -> Result<i64, SqliteError> {
        match self.value(i) {
            ValueRef::Integer(v) => Ok(v),
            v => {
                Err(SqliteError::Other(format!("column {i}: expected an integer, found {:?}", v.data_type())))
            }
        }
    }

    /// Column `i` as text: an error unless it is valid UTF-8 text (as rusqlite's `get::<&str>`).
    pub fn text(&self, i: c_int) -> Result<&str, SqliteError> {
        self.value(i).as_str().map_err(|e| SqliteError::Other(format!("column {i}: {e}")))
    }

    /// Whether column `i` is text equal to `s` (compared as bytes: nothing to validate).
    pub fn is_text(&self, i: c_int, s: &str) -> bool {
        matches!(self.value(i), ValueRef::Text(t) if t == s.as_bytes())
    }

    /// Column `i` read as a rowid: an integer by SQLite's own rule, so its type is not looked up.
    pub fn rowid(&self, i: c_int) -> i64 {
        if !self.on_row || !(0..self.columns).contains(&i) {
            return 0;
        }
        // SAFETY: the statement is on a row and `i` is one of its columns.
        unsafe { ffi::sqlite3_column_int64(self.stmt.as_ptr(), i) }
    }

    fn check(&self, rc: c_int) -> Result<(), SqliteError> {
        if rc == ffi::SQLITE_OK { Ok(()) } else { Err(error(self.db, rc)) }
    }
}

impl Drop for Stepper<'_> {
    fn drop(&mut self) {
        // SAFETY: the statement is finalized once, here.
        unsafe { ffi::sqlite3_finalize(self.stmt.as_ptr()) };
    }
}

/// `len` bytes at `p` (none when SQLite returns null, as it does for an empty value).
///
/// SAFETY: `p` must be null or valid for `len` bytes for the returned lifetime.
unsafe fn bytes<'a>(p: *const u8, len: c_int) -> &'a [u8] {
    if p.is_null() || len <= 0 { &[] } else { unsafe { std::slice::from_raw_parts(p, len as usize) } }
}

/// The connection's error for a failed call, classified as rusqlite's errors are.
fn error(db: *mut ffi::sqlite3, rc: c_int) -> SqliteError {
    // SAFETY: `db` is a live connection; its message is copied before any other call.
    let msg = unsafe {
        let m = ffi::sqlite3_errmsg(db);
        (!m.is_null()).then(|| CStr::from_ptr(m).to_string_lossy().into_owned())
    };
    rusqlite::Error::SqliteFailure(ffi::Error::new(rc), msg).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every column type reads as rusqlite reads it; values off a row, out of range or of the
    /// wrong type are `Null` or errors, never a read of freed memory.
    #[test]
    fn reads_columns_as_rusqlite_does() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t(a, b, c, d, e);
             INSERT INTO t VALUES (1, 2.5, 'x\u{e9}', x'00ff', NULL), (-7, 0.0, '', x'', NULL);
             INSERT INTO t VALUES (3, 1.0, CAST(x'ff' AS TEXT), 'blob?', 5);",
        )
        .unwrap();
        let mut st =
            Stepper::prepare(&conn, "SELECT a, b, c, d, e FROM t WHERE a > ?1 ORDER BY rowid").unwrap();
        assert_eq!(st.value(0), ValueRef::Null);
        st.bind_int(1, -100).unwrap();
        let mut theirs = conn.prepare("SELECT a, b, c, d, e FROM t WHERE a > -100 ORDER BY rowid").unwrap();
        let mut rows = theirs.query([]).unwrap();
        while st.step().unwrap() {
            let r = rows.next().unwrap().unwrap();
            for i in 0..5 {
                assert_eq!(st.value(i), r.get_ref(i as usize).unwrap());
                assert_eq!(st.int(i).ok(), r.get::<_, i64>(i as usize).ok());
                assert_eq!(st.text(i).ok(), r.get_ref(i as usize).unwrap().as_str().ok());
                if let Ok(t) = r.get_ref(i as usize).unwrap().as_str() {
                    assert!(st.is_text(i, t) && !st.is_text(i, "-"));
                }
            }
            assert_eq!(st.rowid(0), r.get::<_, i64>(0).unwrap());
            assert_eq!(st.value(5), ValueRef::Null);
            assert_eq!(st.value(-1), ValueRef::Null);
        }
        assert!(rows.next().unwrap().is_none());
        assert_eq!(st.value(0), ValueRef::Null);
        // Run again with another binding after a reset.
        st.reset();
        st.bind_int(1, 0).unwrap();
        let mut seen = Vec::new();
        while st.step().unwrap() {
            seen.push(st.int(0).unwrap());
        }
        assert_eq!(seen, [1, 3]);
        st.reset();
        st.bind_text(1, "zz").unwrap();
        assert!(!st.step().unwrap());
    }

    /// A bad statement, a bad binding and a failing step are typed errors.
    #[test]
    fn errors_are_typed() {
        let conn = Connection::open_in_memory().unwrap();
        assert!(
            matches!(Stepper::prepare(&conn, "SELEC 1"), Err(SqliteError::Other(m)) if m.contains("syntax"))
        );
        assert!(Stepper::prepare(&conn, "").is_err());
        let mut st = Stepper::prepare(&conn, "SELECT ?1").unwrap();
        assert!(st.bind_int(2, 1).is_err());
        let mut st = Stepper::prepare(&conn, "SELECT abs(-9223372036854775807 - 1)").unwrap();
        assert!(matches!(st.step(), Err(SqliteError::Other(m)) if m.contains("overflow")));
    }
}
