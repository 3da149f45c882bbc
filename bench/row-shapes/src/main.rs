//! Writes audit rows in one of several table shapes, the way hookwarden's audit writer does
//! (32-row `INSERT` statements bound with `SQLITE_STATIC`, about 500 rows a transaction, WAL,
//! `synchronous = NORMAL`), so that callgrind can count what a row costs in each shape.
//! The values are those of an allowed request on bench/run's `plain` route.
//!
//! Usage: row-shapes SHAPE EVENTS [STATEMENT_EVENTS] [scan]
//!   SHAPE:            columns | columns-loose | json | json-virtual | hybrid | batch-json
//!                     (see `SHAPES`)
//!   EVENTS:           how many events to write, a multiple of STATEMENT_EVENTS
//!   STATEMENT_EVENTS: events an `INSERT` carries (default 32, as hookwarden's full batches
//!                     but for one 128-event statement; `batch-json` puts them in one row)
//!   scan:             then time a filtered scan (client address and outcome) over them

use std::ffi::c_char;
use std::fmt::Write as _;

use rusqlite::{Connection, ffi};

/// Name, `CREATE TABLE`, the columns each row binds, and what the filtered scan reads (`FROM`).
const SHAPES: &[(&str, &str, &str, &str)] = &[
    (
        // hookwarden's audit table today (store/events.rs), without indexes as it is now.
        "columns",
        "CREATE TABLE events (id INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, \
         request_id TEXT NOT NULL, route TEXT, client_ip TEXT NOT NULL, method TEXT NOT NULL, \
         status INTEGER NOT NULL, outcome TEXT NOT NULL, reason TEXT, detail TEXT, flags TEXT, \
         key_id TEXT, session_id TEXT, latency_us INTEGER NOT NULL, upstream_status INTEGER, \
         upstream_latency_us INTEGER, user_agent TEXT) STRICT",
        "id, time_ms, request_id, route, client_ip, method, status, outcome, reason, detail, \
         flags, key_id, session_id, latency_us, upstream_status, upstream_latency_us, user_agent",
        "events WHERE client_ip = '10.0.0.1' AND outcome = 'allowed'",
    ),
    (
        // The same columns in a table that is not STRICT (types by affinity, not checked).
        "columns-loose",
        "CREATE TABLE events (id INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, \
         request_id TEXT NOT NULL, route TEXT, client_ip TEXT NOT NULL, method TEXT NOT NULL, \
         status INTEGER NOT NULL, outcome TEXT NOT NULL, reason TEXT, detail TEXT, flags TEXT, \
         key_id TEXT, session_id TEXT, latency_us INTEGER NOT NULL, upstream_status INTEGER, \
         upstream_latency_us INTEGER, user_agent TEXT)",
        "id, time_ms, request_id, route, client_ip, method, status, outcome, reason, detail, \
         flags, key_id, session_id, latency_us, upstream_status, upstream_latency_us, user_agent",
        "events WHERE client_ip = '10.0.0.1' AND outcome = 'allowed'",
    ),
    (
        // Everything but the id and time in one JSON text; filters read the JSON.
        "json",
        "CREATE TABLE events (id INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, \
         data TEXT NOT NULL) STRICT",
        "id, time_ms, data",
        "events WHERE data ->> '$.client_ip' = '10.0.0.1' AND data ->> '$.outcome' = 'allowed'",
    ),
    (
        // The same JSON text with the filtered fields as VIRTUAL generated columns.
        "json-virtual",
        "CREATE TABLE events (id INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, \
         data TEXT NOT NULL, request_id TEXT AS (data ->> '$.request_id') VIRTUAL, \
         route TEXT AS (data ->> '$.route') VIRTUAL, \
         client_ip TEXT AS (data ->> '$.client_ip') VIRTUAL, \
         outcome TEXT AS (data ->> '$.outcome') VIRTUAL, \
         reason TEXT AS (data ->> '$.reason') VIRTUAL) STRICT",
        "id, time_ms, data",
        "events WHERE client_ip = '10.0.0.1' AND outcome = 'allowed'",
    ),
    (
        // The filtered fields as columns, the rest in one JSON text.
        "hybrid",
        "CREATE TABLE events (id INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, \
         request_id TEXT NOT NULL, route TEXT, client_ip TEXT NOT NULL, outcome TEXT NOT NULL, \
         reason TEXT, more TEXT NOT NULL) STRICT",
        "id, time_ms, request_id, route, client_ip, outcome, reason, more",
        "events WHERE client_ip = '10.0.0.1' AND outcome = 'allowed'",
    ),
    (
        // One row per statement's events (32 by default): their JSON texts as one array (a
        // row per batch, not per request); filters expand the arrays.
        "batch-json",
        "CREATE TABLE events (id INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, \
         data TEXT NOT NULL) STRICT",
        "id, time_ms, data",
        "events, json_each(events.data) AS e \
         WHERE e.value ->> '$.client_ip' = '10.0.0.1' AND e.value ->> '$.outcome' = 'allowed'",
    ),
];

const EVENTS_PER_TRANSACTION: usize = 512;

#[derive(Clone, Copy)]
enum Param<'a> {
    Null,
    Int(i64),
    Text(&'a str),
}

/// A statement bound without copies, as hookwarden's `StaticStatement`; it cannot outlive
/// its connection.
struct Statement<'c> {
    stmt: *mut ffi::sqlite3_stmt,
    params: usize,
    _conn: std::marker::PhantomData<&'c Connection>,
}

impl<'c> Statement<'c> {
    fn prepare(conn: &'c Connection, sql: &str) -> Statement<'c> {
        let mut stmt = std::ptr::null_mut();
        // SAFETY: the connection is open; `sql` is valid for its length.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                conn.handle(),
                sql.as_ptr().cast(),
                i32::try_from(sql.len()).expect("statement length"),
                ffi::SQLITE_PREPARE_PERSISTENT as _,
                &mut stmt,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(rc, ffi::SQLITE_OK, "cannot prepare {sql}");
        // SAFETY: `stmt` was just prepared.
        let params = unsafe { ffi::sqlite3_bind_parameter_count(stmt) };
        Statement {
            stmt,
            params: usize::try_from(params).expect("parameter count"),
            _conn: std::marker::PhantomData,
        }
    }

    fn execute(&mut self, values: &[Param]) {
        assert_eq!(values.len(), self.params, "values for every parameter");
        // SAFETY: the statement is live; every text outlives the step and is unbound before
        // this returns (on a panic in between, the statement is only finalized, which reads
        // no bound value).
        unsafe {
            for (i, v) in values.iter().enumerate() {
                let at = i as i32 + 1;
                let rc = match *v {
                    Param::Null => ffi::SQLITE_OK,
                    Param::Int(n) => ffi::sqlite3_bind_int64(self.stmt, at, n),
                    Param::Text(s) => ffi::sqlite3_bind_text64(
                        self.stmt,
                        at,
                        s.as_ptr().cast::<c_char>(),
                        s.len() as u64,
                        ffi::SQLITE_STATIC(),
                        ffi::SQLITE_UTF8 as _,
                    ),
                };
                assert_eq!(rc, ffi::SQLITE_OK, "binding parameter {at}");
            }
            assert_eq!(ffi::sqlite3_step(self.stmt), ffi::SQLITE_DONE);
            ffi::sqlite3_reset(self.stmt);
            ffi::sqlite3_clear_bindings(self.stmt);
        }
    }
}

impl Drop for Statement<'_> {
    fn drop(&mut self) {
        // SAFETY: finalized once; the connection outlives `'c`, so it is still open.
        unsafe {
            ffi::sqlite3_finalize(self.stmt);
        }
    }
}

fn insert_sql(columns: &str, rows: usize) -> String {
    let per_row = columns.split(',').count();
    let mut sql = format!("INSERT INTO events ({columns}) VALUES ");
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 1..=per_row {
            if c > 1 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "?{}", r * per_row + c);
        }
        sql.push(')');
    }
    sql
}

/// A JSON string as hookwarden's log line writes one: checked for characters to escape, then
/// copied. The values written here never have any, so the escaping itself is left out.
fn json_str(out: &mut String, s: &str) {
    assert!(
        !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20),
        "a value to escape"
    );
    out.push('"');
    out.push_str(s);
    out.push('"');
}

/// One allowed request's fields, as the audit writer has them.
struct Row<'a> {
    time_ms: i64,
    request_id: &'a str,
    latency_us: i64,
}

/// The JSON text of the fields a shape keeps in JSON (`all`: every field).
fn json_text(out: &mut String, r: &Row, all: bool) {
    out.clear();
    out.push('{');
    if all {
        out.push_str("\"request_id\":");
        json_str(out, r.request_id);
        out.push_str(",\"route\":");
        json_str(out, "hook");
        out.push_str(",\"client_ip\":\"127.0.0.1\",\"outcome\":\"allowed\",");
    }
    out.push_str("\"method\":");
    json_str(out, "POST");
    let _ = write!(
        out,
        ",\"status\":200,\"latency_us\":{},\"upstream_status\":200,\"upstream_latency_us\":{}}}",
        r.latency_us,
        r.latency_us - 40
    );
}

/// The values of one allowed request's row in `shape`, its JSON text (if the shape has one)
/// already in `text`.
fn row_values<'a>(shape: &str, r: &Row<'a>, text: &'a str, out: &mut Vec<Param<'a>>) {
    let (id, time) = (Param::Null, Param::Int(r.time_ms));
    let (request_id, route, ip, outcome) = (
        Param::Text(r.request_id),
        Param::Text("hook"),
        Param::Text("127.0.0.1"),
        Param::Text("allowed"),
    );
    match shape {
        "columns" | "columns-loose" => out.extend([
            id,
            time,
            request_id,
            route,
            ip,
            Param::Text("POST"),
            Param::Int(200),
            outcome,
            Param::Null,
            Param::Null,
            Param::Null,
            Param::Null,
            Param::Null,
            Param::Int(r.latency_us),
            Param::Int(200),
            Param::Int(r.latency_us - 40),
            Param::Null,
        ]),
        "json" | "json-virtual" => out.extend([id, time, Param::Text(text)]),
        _ => out.extend([
            id,
            time,
            request_id,
            route,
            ip,
            outcome,
            Param::Null,
            Param::Text(text),
        ]),
    }
}

fn usage() -> ! {
    eprintln!("usage: row-shapes SHAPE EVENTS [STATEMENT_EVENTS] [scan]");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scan = args.last().is_some_and(|a| a == "scan");
    let numbers = &args[..args.len() - usize::from(scan)];
    let (shape, events, per_statement) = match numbers {
        [s, n] => (s, n.parse::<usize>(), Ok(32)),
        [s, n, k] => (s, n.parse::<usize>(), k.parse::<usize>()),
        _ => usage(),
    };
    let (Ok(events), Ok(per_statement)) = (events, per_statement) else {
        usage()
    };
    if per_statement == 0 || events % per_statement != 0 {
        eprintln!("row-shapes: EVENTS must be a multiple of STATEMENT_EVENTS (above 0)");
        std::process::exit(2);
    }
    let Some(&(_, create, columns, filter)) = SHAPES.iter().find(|s| s.0 == shape) else {
        eprintln!("row-shapes: unknown shape {shape}");
        std::process::exit(2);
    };
    let path = std::env::temp_dir().join(format!("row-shapes-{shape}.db"));
    let remove_files = || {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    };
    remove_files();
    let conn = Connection::open(&path).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("WAL");
    conn.pragma_update(None, "synchronous", "NORMAL")
        .expect("synchronous");
    conn.execute_batch(create).expect("create");
    let batched = shape == "batch-json";
    let rows_per_statement = if batched { 1 } else { per_statement };
    let mut stmt = Statement::prepare(&conn, &insert_sql(columns, rows_per_statement));
    let mut texts = vec![String::new(); per_statement];
    let mut array = String::new();
    // Made once: what making them costs is the same in every shape.
    let request_ids: Vec<String> = (0..per_statement)
        .map(|i| format!("01JDXK3ZV9Q8R7T6Y5W{i:07}"))
        .collect();
    let mut written = 0;
    while written < events {
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        let end = events.min(written + EVENTS_PER_TRANSACTION.max(per_statement));
        while written < end {
            let batch: Vec<Row> = (0..per_statement)
                .map(|k| {
                    let i = (written + k) as i64;
                    Row {
                        time_ms: 1_764_560_000_000 + i / 50,
                        request_id: &request_ids[k],
                        latency_us: 250 + i % 97,
                    }
                })
                .collect();
            for (r, text) in batch.iter().zip(&mut texts) {
                match shape.as_str() {
                    "json" | "json-virtual" | "batch-json" => json_text(text, r, true),
                    "hybrid" => json_text(text, r, false),
                    _ => {}
                }
            }
            let mut values = Vec::with_capacity(per_statement * 17);
            if batched {
                array.clear();
                array.push('[');
                for (k, text) in texts.iter().enumerate() {
                    if k > 0 {
                        array.push(',');
                    }
                    array.push_str(text);
                }
                array.push(']');
                values.extend([
                    Param::Null,
                    Param::Int(batch[0].time_ms),
                    Param::Text(&array),
                ]);
            } else {
                for (r, text) in batch.iter().zip(&texts) {
                    row_values(shape, r, text, &mut values);
                }
            }
            stmt.execute(&values);
            written += per_statement;
        }
        conn.execute_batch("COMMIT").expect("commit");
    }
    if scan {
        // The median of three: one scan's time moves with the machine's other load.
        let sql = format!("SELECT count(*) FROM {filter}");
        let mut times: Vec<f64> = (0..3)
            .map(|_| {
                let started = std::time::Instant::now();
                let _: i64 = conn.query_row(&sql, [], |r| r.get(0)).expect("scan");
                started.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "{shape}: a filtered scan of {written} events took {:.0} ms",
            times[1]
        );
    }
    drop(stmt);
    drop(conn);
    remove_files();
}
