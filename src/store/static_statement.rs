//! Prepared statements bound without copying their text: the audit log's multi-row `INSERT`.
//!
//! rusqlite binds every text value with `SQLITE_TRANSIENT`, so SQLite copies it into a buffer
//! it allocates, and frees that buffer when the value is unbound: about 250 instructions a
//! value, and an allowed request's audit row has six (`bench/run --instructions`, `plain`: a
//! fifth of what the row costs). Here a statement is prepared and bound through SQLite's C API
//! with `SQLITE_STATIC`, so the step reads the values where they are.
//!
//! This is the crate's only unsafe code. It keeps three rules, each in one place:
//! - a [`StaticStatement`] is only used while its connection is locked: it lives in
//!   [`super::Db`] beside the connection (which is opened without SQLite's own mutex) and its
//!   methods take the connection by reference;
//! - it is finalized before its connection closes: `Db` declares it before the connection,
//!   and fields are dropped in declaration order;
//! - no bound value outlives the call that bound it: [`StaticStatement::execute`] binds, steps,
//!   resets and clears the bindings in one call, with the values borrowed for all of it, so the
//!   statement never holds a pointer into memory that may be freed.

use std::ffi::{CStr, c_char, c_int};
use std::ptr::NonNull;

use rusqlite::{Connection, ffi};

/// One parameter's value, borrowed for one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param<'a> {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// UTF-8 text.
    Text(&'a str),
}

/// A prepared statement whose text parameters are bound without a copy.
pub struct StaticStatement {
    stmt: NonNull<ffi::sqlite3_stmt>,
    params: usize,
}

// SAFETY: the statement is only used through `&Connection` while the connection is locked (the
// connection itself is `Send`); nothing in it is tied to the thread that prepared it.
unsafe impl Send for StaticStatement {}

impl StaticStatement {
    /// Prepares `sql` (one statement) on `conn`; it lasts as long as it is kept.
    pub fn prepare(conn: &Connection, sql: &str) -> rusqlite::Result<StaticStatement> {
        let len = c_int::try_from(sql.len()).map_err(|_| {
            rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_TOOBIG), None)
        })?;
        let mut stmt: *mut ffi::sqlite3_stmt = std::ptr::null_mut();
        // SAFETY: `conn` is borrowed, so its handle is open and not used elsewhere meanwhile;
        // `sql` is valid for `len` bytes (no NUL needed when the length is given).
        let rc = unsafe {
            let db = conn.handle();
            ffi::sqlite3_prepare_v3(
                db,
                sql.as_ptr().cast::<c_char>(),
                len,
                ffi::SQLITE_PREPARE_PERSISTENT as _,
                &mut stmt,
                std::ptr::null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(error(conn, rc));
        }
        let Some(stmt) = NonNull::new(stmt) else {
            // Only whitespace or a comment: nothing to run.
            return Err(rusqlite::Error::SqliteFailure(
                ffi::Error::new(ffi::SQLITE_MISUSE),
                Some("empty statement".into()),
            ));
        };
        // SAFETY: `stmt` was just prepared.
        let params = unsafe { ffi::sqlite3_bind_parameter_count(stmt.as_ptr()) };
        Ok(StaticStatement {
            stmt,
            params: usize::try_from(params).unwrap_or(0),
        })
    }

    /// Runs the statement once with `values` as its parameters `1..=values.len()` (the rest
    /// NULL), on the connection it was prepared on; it must not return rows.
    pub fn execute(&mut self, conn: &Connection, values: &[Param<'_>]) -> rusqlite::Result<()> {
        if values.len() > self.params {
            return Err(rusqlite::Error::InvalidParameterCount(
                values.len(),
                self.params,
            ));
        }
        let stmt = self.stmt.as_ptr();
        // SAFETY: both handles are live; this only compares them.
        debug_assert!(
            unsafe { ffi::sqlite3_db_handle(stmt) == conn.handle() },
            "a statement used on a connection it was not prepared on"
        );
        let bound = values.iter().enumerate().try_for_each(|(i, v)| {
            // Parameters count from 1; `i < params <= c_int::MAX`.
            let at = i as c_int + 1;
            // SAFETY: `stmt` is live; a text pointer is valid for its length until the
            // bindings are cleared below, before `values` can be released.
            let rc = unsafe {
                match *v {
                    // Parameters are NULL when this is called (cleared after the last run).
                    Param::Null => ffi::SQLITE_OK,
                    Param::Int(n) => ffi::sqlite3_bind_int64(stmt, at, n),
                    Param::Text(s) => ffi::sqlite3_bind_text64(
                        stmt,
                        at,
                        // An empty `String`'s pointer dangles (it is never read for a length of
                        // zero); a static one is tidier.
                        if s.is_empty() { "" } else { s }.as_ptr().cast::<c_char>(),
                        s.len() as ffi::sqlite3_uint64,
                        ffi::SQLITE_STATIC(),
                        ffi::SQLITE_UTF8 as _,
                    ),
                }
            };
            if rc == ffi::SQLITE_OK {
                Ok(())
            } else {
                Err(rc)
            }
        });
        let result = match bound {
            Err(rc) => Err(error(conn, rc)),
            // SAFETY: `stmt` is live and every bound value is borrowed for this call.
            Ok(()) => match unsafe { ffi::sqlite3_step(stmt) } {
                ffi::SQLITE_DONE => Ok(()),
                ffi::SQLITE_ROW => Err(rusqlite::Error::ExecuteReturnedResults),
                // The message is read before the reset, which may replace it.
                rc => Err(error(conn, rc)),
            },
        };
        // SAFETY: `stmt` is live. Reset makes it runnable again (its error, if any, is the
        // step's, reported above); clearing sets every parameter back to NULL, so no pointer
        // into `values` stays behind.
        unsafe {
            ffi::sqlite3_reset(stmt);
            ffi::sqlite3_clear_bindings(stmt);
        }
        result
    }
}

impl Drop for StaticStatement {
    fn drop(&mut self) {
        // SAFETY: finalized once, here; the connection is still open (see the module comment).
        unsafe {
            ffi::sqlite3_finalize(self.stmt.as_ptr());
        }
    }
}

/// The error SQLite reports for `rc`, with the connection's message.
fn error(conn: &Connection, rc: c_int) -> rusqlite::Error {
    // SAFETY: the handle is open; the message is copied out before anything else runs on it.
    let message = unsafe {
        let m = ffi::sqlite3_errmsg(conn.handle());
        (!m.is_null()).then(|| CStr::from_ptr(m).to_string_lossy().into_owned())
    };
    rusqlite::Error::SqliteFailure(ffi::Error::new(rc), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (a INTEGER, b TEXT, c TEXT) STRICT;")
            .unwrap();
        c
    }

    #[test]
    fn values_are_written_as_bound_and_reruns_start_from_null() {
        let c = conn();
        let mut s = StaticStatement::prepare(&c, "INSERT INTO t VALUES (?1, ?2, ?3), (?4, ?5, ?6)")
            .unwrap();
        {
            // Owned strings dropped right after the call: the row must hold copies.
            let b = String::from("first \u{e9}");
            let with_nul = String::from("a\0b");
            s.execute(
                &c,
                &[
                    Param::Int(1),
                    Param::Text(&b),
                    Param::Null,
                    Param::Int(2),
                    Param::Text(&with_nul),
                    Param::Text(""),
                ],
            )
            .unwrap();
        }
        // Fewer values than parameters: the rest are NULL, not the previous run's.
        s.execute(&c, &[Param::Int(3)]).unwrap();
        let rows: Vec<(Option<i64>, Option<String>, Option<String>)> = c
            .prepare("SELECT a, b, c FROM t ORDER BY rowid")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (Some(1), Some("first \u{e9}".into()), None),
                (Some(2), Some("a\0b".into()), Some(String::new())),
                (Some(3), None, None),
                (None, None, None),
            ]
        );
    }

    #[test]
    fn errors_carry_sqlite_code_and_message_and_leave_it_usable() {
        let c = conn();
        c.execute_batch("CREATE UNIQUE INDEX t_a ON t (a);")
            .unwrap();
        let mut s = StaticStatement::prepare(&c, "INSERT INTO t (a, b) VALUES (?1, ?2)").unwrap();
        s.execute(&c, &[Param::Int(1), Param::Text("x")]).unwrap();
        let err = s
            .execute(&c, &[Param::Int(1), Param::Text("y")])
            .unwrap_err();
        assert_eq!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::ConstraintViolation)
        );
        assert!(err.to_string().contains("UNIQUE"), "{err}");
        // STRICT: text into an INTEGER column is refused with SQLite's own message.
        let err = s.execute(&c, &[Param::Text("nope")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot store TEXT value in INTEGER column"),
            "{err}"
        );
        // Too many values for the statement.
        let err = s
            .execute(&c, &[Param::Int(5), Param::Null, Param::Null])
            .unwrap_err();
        assert!(
            matches!(err, rusqlite::Error::InvalidParameterCount(3, 2)),
            "{err}"
        );
        s.execute(&c, &[Param::Int(2), Param::Text("z")]).unwrap();
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
        // A statement that does not parse names the problem.
        let err = StaticStatement::prepare(&c, "INSERT INTO nowhere VALUES (?1)")
            .err()
            .unwrap();
        assert!(err.to_string().contains("no such table: nowhere"), "{err}");
        assert!(StaticStatement::prepare(&c, "  -- nothing").is_err());
    }

    #[test]
    fn survives_a_schema_change_between_runs() {
        let c = conn();
        let mut s = StaticStatement::prepare(&c, "INSERT INTO t (a, b) VALUES (?1, ?2)").unwrap();
        s.execute(&c, &[Param::Int(1), Param::Text("before")])
            .unwrap();
        c.execute_batch("CREATE INDEX t_b ON t (b); ALTER TABLE t ADD COLUMN d TEXT;")
            .unwrap();
        s.execute(&c, &[Param::Int(2), Param::Text("after")])
            .unwrap();
        let found: String = c
            .query_row(
                "SELECT b FROM t INDEXED BY t_b WHERE b = 'after'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(found, "after");
    }
}
