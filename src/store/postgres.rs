//! The PostgreSQL-backed [`Store`], for several replicas on one database.
//!
//! Why threads: the [`Store`] trait is synchronous and is called from async code on tokio
//! workers (and from current-thread test runtimes), where the sync `postgres` client (which
//! runs its own runtime) must not be driven. So a small pool of dedicated OS threads owns
//! the connections; each call sends a job over a channel and waits for its answer, just
//! like a blocking sled call. A dropped connection is re-opened by the next job, so the
//! store recovers from a database restart on its own; while the database is away every
//! call fails with [`StoreError::Io`] (the audit writer then reports unhealthy and retries).
//!
//! Layout: one table `kv(tbl smallint, key bytea, value bytea, primary key (tbl, key))`;
//! `bytea` sorts bytewise, so scans have sled's order. A [`Batch`] is one call of the
//! `stint_commit` function (one round trip, one transaction): it takes a transaction-scoped
//! advisory lock per key it expects or writes (sorted, so two commits never deadlock), then
//! compares every expectation with the committed value (READ COMMITTED: each statement
//! sees every commit that released those locks) and applies the writes only if all hold.
//! Every key a commit reads or writes is locked, so a precondition cannot go stale between
//! the check and the write, including "absent" ones. A failed expectation is
//! [`StoreError::Conflict`]; so are serialization failures, deadlocks and unique
//! violations, should the database report one.
//!
//! Group commit: [`Store::commit_group`] is one call of `stint_commit_group` (migration 2):
//! every batch's keys flattened into arrays with their batch number, all the group's key
//! locks taken up front (sorted), then batch by batch the preconditions (seeing the earlier
//! batches' writes, as the same transaction) and the writes; at the first batch whose
//! preconditions fail it returns how many were applied, and that prefix commits. One
//! round trip and one transaction (one WAL flush) for up to a few hundred audit records.
//! A plpgsql function rather than a pipelined statement list: the sync client does not
//! pipeline, and stopping at the first failing batch needs control flow in the database.
//!
//! Durability: a PostgreSQL commit is durable (with the default `synchronous_commit`), so
//! [`Store::flush`] only checks that the database answers.
//!
//! Schema changes are versioned migrations recorded in `schema_migrations`, applied by
//! [`migrate`] under a session advisory lock, so replicas starting together apply each
//! once. `stint init` and every start run them.
//!
//! Connections are plain TCP (or a Unix socket given as `host=/run/postgresql`) unless the
//! URL asks for TLS (`sslmode=verify-full`, `sslrootcert=`): then verified TLS over rustls
//! ([`postgres_tls`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, Statement};

use super::postgres_tls::{self, Connector};
use super::{Batch, Entries, Entry, Store, StoreError, Table};

/// Connections (and threads) per store.
pub const DEFAULT_POOL_SIZE: usize = 4;
/// How long the TCP connect may take (the URL's `connect_timeout` overrides it); the
/// startup exchange after it (TLS, authentication) gets as long again, plus
/// [`postgres_tls::HANDSHAKE_TIMEOUT`] for a TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connection attempts given up on whose threads still wait for a stalled server.
static HUNG_CONNECTS: AtomicUsize = AtomicUsize::new(0);
/// Past this many, a new attempt fails at once rather than park another thread.
const MAX_HUNG_CONNECTS: usize = 16;
/// The session advisory lock that serialises migrations ("STINTMIG").
const MIGRATION_LOCK: i64 = 0x5354_494e_544d_4947;

/// Versioned schema changes, applied in order, each in its own transaction.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE kv (
    tbl smallint NOT NULL,
    key bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (tbl, key)
);
CREATE FUNCTION stint_commit(
    locks bigint[],
    e_tbl smallint[], e_key bytea[], e_val bytea[],
    w_tbl smallint[], w_key bytea[], w_val bytea[]
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    h bigint;
    i integer;
    cur bytea;
BEGIN
    FOREACH h IN ARRAY locks LOOP
        PERFORM pg_advisory_xact_lock(h);
    END LOOP;
    FOR i IN 1 .. coalesce(array_length(e_tbl, 1), 0) LOOP
        cur := NULL;
        SELECT value INTO cur FROM kv WHERE tbl = e_tbl[i] AND key = e_key[i];
        IF cur IS DISTINCT FROM e_val[i] THEN
            RETURN false;
        END IF;
    END LOOP;
    FOR i IN 1 .. coalesce(array_length(w_tbl, 1), 0) LOOP
        IF w_val[i] IS NULL THEN
            DELETE FROM kv WHERE tbl = w_tbl[i] AND key = w_key[i];
        ELSE
            INSERT INTO kv (tbl, key, value) VALUES (w_tbl[i], w_key[i], w_val[i])
                ON CONFLICT (tbl, key) DO UPDATE SET value = EXCLUDED.value;
        END IF;
    END LOOP;
    RETURN true;
END
$$;
"#,
    ),
    (
        2,
        r#"
CREATE FUNCTION stint_commit_group(
    locks bigint[],
    e_batch integer[], e_tbl smallint[], e_key bytea[], e_val bytea[],
    w_batch integer[], w_tbl smallint[], w_key bytea[], w_val bytea[],
    batches integer
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    h bigint;
    b integer;
    e integer := 1;
    w integer := 1;
    e_len integer := coalesce(array_length(e_batch, 1), 0);
    w_len integer := coalesce(array_length(w_batch, 1), 0);
    cur bytea;
BEGIN
    FOREACH h IN ARRAY locks LOOP
        PERFORM pg_advisory_xact_lock(h);
    END LOOP;
    FOR b IN 1 .. batches LOOP
        WHILE e <= e_len AND e_batch[e] = b LOOP
            cur := NULL;
            SELECT value INTO cur FROM kv WHERE tbl = e_tbl[e] AND key = e_key[e];
            IF cur IS DISTINCT FROM e_val[e] THEN
                RETURN b - 1;
            END IF;
            e := e + 1;
        END LOOP;
        WHILE w <= w_len AND w_batch[w] = b LOOP
            IF w_val[w] IS NULL THEN
                DELETE FROM kv WHERE tbl = w_tbl[w] AND key = w_key[w];
            ELSE
                INSERT INTO kv (tbl, key, value) VALUES (w_tbl[w], w_key[w], w_val[w])
                    ON CONFLICT (tbl, key) DO UPDATE SET value = EXCLUDED.value;
            END IF;
            w := w + 1;
        END LOOP;
    END LOOP;
    RETURN batches;
END
$$;
"#,
    ),
];

/// The newest schema version this build knows.
pub fn schema_version() -> i32 {
    MIGRATIONS.last().map_or(0, |(version, _)| *version)
}

type Job = Box<dyn FnOnce(&mut Conn) + Send>;

pub struct PostgresStore {
    jobs: Sender<Job>,
    workers: Vec<JoinHandle<()>>,
}

/// True when `url` names a PostgreSQL database rather than a data dir.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `url` with any password replaced by `***`, for logs and printed config: the user
/// info's password (which ends at the first `@`, as tokio-postgres reads it, so a `/` or
/// `?` in it stays hidden) and every query parameter whose decoded key is `password`. A
/// key=value string that mentions a password is not shown at all (its values may be
/// quoted, with spaces).
pub fn redact_url(url: &str) -> String {
    use super::postgres_tls::{host_start, percent_decode};
    let Some(host_start) = host_start(url) else {
        return match url.to_ascii_lowercase().contains("password") {
            true => "<key=value connection string, not shown: it has a password>".into(),
            false => url.to_string(),
        };
    };
    let scheme_end = url.find("://").map_or(0, |at| at + 3);
    let mut out = match url[scheme_end..host_start].split_once(':') {
        Some((user, _)) => format!("{}{user}:***@", &url[..scheme_end]),
        None => url[..host_start].to_string(),
    };
    let (base, query) = match url[host_start..].split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (&url[host_start..], None),
    };
    out.push_str(base);
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| {
                let key = pair.split_once('=').map_or(pair, |(key, _)| key);
                match percent_decode(key).as_deref() {
                    Some(key) if key != "password" => pair.to_string(),
                    _ => format!("{key}=***"),
                }
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

fn io(err: impl std::fmt::Display) -> StoreError {
    StoreError::Io(err.to_string())
}

fn map_err(err: &postgres::Error) -> StoreError {
    match err.code() {
        Some(code)
            if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::UNIQUE_VIOLATION =>
        {
            StoreError::Conflict
        }
        _ => match err.as_db_error() {
            Some(db) => StoreError::Io(format!(
                "postgresql: {}: {}",
                db.code().code(),
                db.message()
            )),
            None => StoreError::Io(format!("postgresql: {}", describe(err))),
        },
    }
}

/// An error with its causes ("error performing TLS handshake: invalid peer certificate:
/// UnknownIssuer"): the client's own message alone does not say what went wrong.
fn describe(err: &postgres::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// True when the error means this connection is of no further use: no answer from the
/// server at all (I/O), a connection exception (class 08), or the server shutting the
/// session down (class 57: `pg_ctl stop`, `pg_terminate_backend`), which may arrive
/// before the client has noticed the socket close.
fn connection_lost(err: &postgres::Error) -> bool {
    match err.code() {
        None => err.as_db_error().is_none(),
        Some(code) => code.code().starts_with("08") || code.code().starts_with("57"),
    }
}

/// The connection settings of `url`, and how to connect (plain or verified TLS, see
/// [`postgres_tls`]).
fn parse_config(url: &str) -> Result<(postgres::Config, Connector), StoreError> {
    let (url, tls) = postgres_tls::split_url(url)?;
    let connector = Connector::for_mode(&tls)?;
    let mut config: postgres::Config = url.parse().map_err(|e| {
        StoreError::Io(format!(
            "store url {} is not a PostgreSQL URL: {e}",
            redact_url(&url)
        ))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.keepalives(true);
    config.application_name("stint");
    Ok((config, connector))
}

/// How long opening a connection may take in all: the TCP connect, then as long again
/// for the startup exchange, plus the TLS handshake's own bound.
fn startup_limit(config: &postgres::Config, connector: &Connector) -> Duration {
    let connect = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(CONNECT_TIMEOUT);
    let tls = match connector {
        Connector::Plain => Duration::ZERO,
        Connector::Tls(_) => postgres_tls::HANDSHAKE_TIMEOUT,
    };
    connect * 2 + tls
}

/// Opens a connection within [`startup_limit`]. tokio-postgres's `connect_timeout` bounds
/// only the TCP connect, and the sync client offers no hook into the startup exchange, so
/// a server that accepts and then never answers would hold the calling pool thread for
/// good. The attempt runs on a thread of its own; past the limit the caller fails and the
/// thread is left to end when the server does (at most [`MAX_HUNG_CONNECTS`] at a time).
fn connect(connector: &Connector, config: &postgres::Config) -> Result<Client, StoreError> {
    const WAITING: u8 = 0;
    const DONE: u8 = 1;
    const ABANDONED: u8 = 2;
    let hung = HUNG_CONNECTS.load(Ordering::SeqCst);
    if hung >= MAX_HUNG_CONNECTS {
        return Err(io(format!(
            "cannot connect to postgresql: {hung} earlier connection attempts are still \
             waiting for the server to answer"
        )));
    }
    let limit = startup_limit(config, connector);
    let state = Arc::new(AtomicU8::new(WAITING));
    let (tx, rx) = mpsc::sync_channel(1);
    let attempt = {
        let (connector, config, state) = (connector.clone(), config.clone(), state.clone());
        move || {
            let result = connector.connect(&config);
            if state
                .compare_exchange(WAITING, DONE, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                // The caller gave up and counted this attempt hung; it is over now.
                HUNG_CONNECTS.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            let _ = tx.send(result);
        }
    };
    std::thread::Builder::new()
        .name("stint-pg-connect".into())
        .spawn(attempt)
        .map_err(|e| io(format!("cannot connect to postgresql: no thread: {e}")))?;
    let result = match rx.recv_timeout(limit) {
        Ok(result) => result,
        Err(_) => {
            // Counted before the state changes, so the thread's decrement never precedes it.
            HUNG_CONNECTS.fetch_add(1, Ordering::SeqCst);
            match state.compare_exchange(WAITING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => {
                    return Err(io(format!(
                        "cannot connect to postgresql: no answer within {limit:?}"
                    )));
                }
                // It finished just now: take its result.
                Err(_) => {
                    HUNG_CONNECTS.fetch_sub(1, Ordering::SeqCst);
                    rx.recv()
                        .map_err(|_| io("cannot connect to postgresql: attempt lost"))?
                }
            }
        }
    };
    result.map_err(|e| match e.as_db_error() {
        Some(_) => map_err(&e),
        None => io(format!("cannot connect to postgresql: {}", describe(&e))),
    })
}

/// Applies every missing migration (under an advisory lock, so concurrent starts apply
/// each once) and returns the schema version.
pub fn migrate(url: &str) -> Result<i32, StoreError> {
    let (config, connector) = parse_config(url)?;
    migrate_over(config, connector)
}

fn migrate_over(config: postgres::Config, connector: Connector) -> Result<i32, StoreError> {
    // The sync client runs its own runtime: keep it off the caller's (maybe async) thread.
    std::thread::spawn(move || -> Result<i32, StoreError> {
        let mut client = connect(&connector, &config)?;
        migrate_with(&mut client)
    })
    .join()
    .map_err(|_| io("migration thread panicked"))?
}

fn migrate_with(client: &mut Client) -> Result<i32, StoreError> {
    let pg = |e: postgres::Error| map_err(&e);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .map_err(pg)?;
    let result = (|| {
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    version integer PRIMARY KEY,
                    applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .map_err(pg)?;
        let current: i32 = client
            .query_one(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                &[],
            )
            .map_err(pg)?
            .get(0);
        if current > schema_version() {
            return Err(StoreError::Io(format!(
                "the database has schema version {current}, newer than this stint ({}): upgrade stint",
                schema_version()
            )));
        }
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            let mut tx = client.transaction().map_err(pg)?;
            tx.batch_execute(sql).map_err(pg)?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[version],
            )
            .map_err(pg)?;
            tx.commit().map_err(pg)?;
            tracing::info!(version, "postgresql schema migrated");
        }
        Ok(schema_version())
    })();
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    let version = result?;
    unlocked.map_err(pg)?;
    Ok(version)
}

/// One worker's connection, opened on first use and re-opened after it drops.
struct Conn {
    config: postgres::Config,
    connector: Connector,
    client: Option<Client>,
    statements: HashMap<&'static str, Statement>,
}

impl Conn {
    fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.statements.clear();
            self.client = None;
            let client = connect(&self.connector, &self.config)?;
            self.client = Some(client);
        }
        let Some(client) = self.client.as_mut() else {
            return Err(io("no postgresql connection"));
        };
        let result = match self.statements.get(sql) {
            Some(statement) => client.query(statement, params),
            None => client.prepare(sql).and_then(|statement| {
                let rows = client.query(&statement, params);
                self.statements.insert(sql, statement);
                rows
            }),
        };
        let closed = client.is_closed();
        result.map_err(|err| {
            if err.is_closed() || closed || connection_lost(&err) {
                self.client = None;
                self.statements.clear();
            }
            map_err(&err)
        })
    }
}

impl PostgresStore {
    /// Connects to `url`, applies the migrations and starts `pool_size` connection threads.
    pub fn open(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let (config, connector) = parse_config(url)?;
        migrate_over(config.clone(), connector.clone())?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let mut workers = Vec::new();
        for n in 0..pool_size.max(1) {
            let queue = queue.clone();
            let mut conn = Conn {
                config: config.clone(),
                connector: connector.clone(),
                client: None,
                statements: HashMap::new(),
            };
            let worker = std::thread::Builder::new()
                .name(format!("stint-pg-{n}"))
                .spawn(move || worker_loop(&queue, &mut conn))
                .map_err(io)?;
            workers.push(worker);
        }
        Ok(Self { jobs, workers })
    }

    fn call<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Conn) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (reply, answer): (SyncSender<Result<R, StoreError>>, Receiver<_>) =
            mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move |conn: &mut Conn| {
                let _ = reply.send(job(conn));
            }))
            .map_err(|_| io("postgresql workers stopped"))?;
        answer.recv().map_err(|_| io("postgresql worker stopped"))?
    }
}

fn worker_loop(queue: &Mutex<Receiver<Job>>, conn: &mut Conn) {
    loop {
        let job = {
            let queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.recv()
        };
        match job {
            Ok(job) => job(conn),
            Err(_) => return,
        }
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Closing the queue stops the workers; wait so their connections close cleanly.
        let (closed, _) = mpsc::channel();
        self.jobs = closed;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// One expectation or write of a [`Batch`]: table, key, value.
type Change = (Table, Vec<u8>, Option<Vec<u8>>);

fn tbl(table: Table) -> i16 {
    // The position in Table::ALL: stable, since tables are only ever appended.
    Table::ALL.iter().position(|t| *t == table).unwrap_or(0) as i16
}

/// The advisory lock that guards one key: 64 bits of SHA-256 over table and key.
fn key_lock(table: Table, key: &[u8]) -> i64 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&tbl(table).to_be_bytes());
    ctx.update(key);
    let digest = ctx.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    i64::from_be_bytes(first)
}

/// The smallest key greater than every key starting with `prefix` (None: no bound).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn entries(rows: Vec<postgres::Row>) -> Result<Entries, StoreError> {
    rows.into_iter()
        .map(|row| {
            Ok((
                row.try_get::<_, Vec<u8>>(0).map_err(|e| map_err(&e))?,
                row.try_get::<_, Vec<u8>>(1).map_err(|e| map_err(&e))?,
            ))
        })
        .collect()
}

impl Store for PostgresStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_vec();
        self.call(move |conn| {
            let rows = conn.query(
                "SELECT value FROM kv WHERE tbl = $1 AND key = $2",
                &[&tbl(table), &key],
            )?;
            rows.first()
                .map(|row| row.try_get::<_, Vec<u8>>(0).map_err(|e| map_err(&e)))
                .transpose()
        })
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // The lower bound: the later of the prefix and `after` (exclusive).
        let (low, inclusive) = match after {
            Some(after) if after >= prefix => (after.to_vec(), false),
            _ => (prefix.to_vec(), true),
        };
        let high = prefix_end(prefix);
        self.call(move |conn| {
            let t = tbl(table);
            let rows = match (inclusive, &high) {
                (true, Some(high)) => conn.query(
                    "SELECT key, value FROM kv WHERE tbl = $1 AND key >= $2 AND key < $3 ORDER BY key LIMIT $4",
                    &[&t, &low, high, &limit],
                ),
                (false, Some(high)) => conn.query(
                    "SELECT key, value FROM kv WHERE tbl = $1 AND key > $2 AND key < $3 ORDER BY key LIMIT $4",
                    &[&t, &low, high, &limit],
                ),
                (true, None) => conn.query(
                    "SELECT key, value FROM kv WHERE tbl = $1 AND key >= $2 ORDER BY key LIMIT $3",
                    &[&t, &low, &limit],
                ),
                (false, None) => conn.query(
                    "SELECT key, value FROM kv WHERE tbl = $1 AND key > $2 ORDER BY key LIMIT $3",
                    &[&t, &low, &limit],
                ),
            }?;
            entries(rows)
        })
    }

    fn last(&self, table: Table) -> Result<Option<Entry>, StoreError> {
        self.call(move |conn| {
            let rows = conn.query(
                "SELECT key, value FROM kv WHERE tbl = $1 ORDER BY key DESC LIMIT 1",
                &[&tbl(table)],
            )?;
            Ok(entries(rows)?.pop())
        })
    }

    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut locks: Vec<i64> = batch
            .expects
            .iter()
            .chain(&batch.writes)
            .map(|(table, key, _)| key_lock(*table, key))
            .collect();
        locks.sort_unstable();
        locks.dedup();
        let e_tbl: Vec<i16> = batch.expects.iter().map(|(t, _, _)| tbl(*t)).collect();
        let e_key: Vec<Vec<u8>> = batch.expects.iter().map(|(_, k, _)| k.clone()).collect();
        let e_val: Vec<Option<Vec<u8>>> = batch.expects.iter().map(|(_, _, v)| v.clone()).collect();
        let w_tbl: Vec<i16> = batch.writes.iter().map(|(t, _, _)| tbl(*t)).collect();
        let w_key: Vec<Vec<u8>> = batch.writes.iter().map(|(_, k, _)| k.clone()).collect();
        let w_val: Vec<Option<Vec<u8>>> = batch.writes.iter().map(|(_, _, v)| v.clone()).collect();
        self.call(move |conn| {
            let rows = conn.query(
                "SELECT stint_commit($1, $2, $3, $4, $5, $6, $7)",
                &[&locks, &e_tbl, &e_key, &e_val, &w_tbl, &w_key, &w_val],
            )?;
            let applied = rows
                .first()
                .map(|row| row.try_get::<_, bool>(0).map_err(|e| map_err(&e)))
                .transpose()?;
            match applied {
                Some(true) => Ok(()),
                _ => Err(StoreError::Conflict),
            }
        })
    }

    fn commit_group(&self, batches: &[Batch]) -> (usize, Result<(), StoreError>) {
        match batches {
            [] => return (0, Ok(())),
            [one] => {
                let result = self.commit(one);
                return (usize::from(result.is_ok()), result);
            }
            _ => {}
        }
        let Ok(count) = i32::try_from(batches.len()) else {
            return (0, Err(io("too many batches in one group")));
        };
        let mut locks: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.expects.iter().chain(&b.writes))
            .map(|(table, key, _)| key_lock(*table, key))
            .collect();
        locks.sort_unstable();
        locks.dedup();
        let flat = |pick: fn(&Batch) -> &[Change]| {
            let mut batch_no = Vec::new();
            let mut tables = Vec::new();
            let mut keys = Vec::new();
            let mut values = Vec::new();
            for (n, batch) in (1i32..).zip(batches) {
                for (table, key, value) in pick(batch) {
                    batch_no.push(n);
                    tables.push(tbl(*table));
                    keys.push(key.clone());
                    values.push(value.clone());
                }
            }
            (batch_no, tables, keys, values)
        };
        let (e_batch, e_tbl, e_key, e_val) = flat(|b| b.expects.as_slice());
        let (w_batch, w_tbl, w_key, w_val) = flat(|b| b.writes.as_slice());
        let applied = self.call(move |conn| {
            let rows = conn.query(
                "SELECT stint_commit_group($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    &locks, &e_batch, &e_tbl, &e_key, &e_val, &w_batch, &w_tbl, &w_key, &w_val,
                    &count,
                ],
            )?;
            rows.first()
                .ok_or_else(|| io("stint_commit_group returned no row"))?
                .try_get::<_, i32>(0)
                .map_err(|e| map_err(&e))
        });
        match applied {
            Ok(applied) => {
                let applied = usize::try_from(applied).unwrap_or(0).min(batches.len());
                let result = if applied == batches.len() {
                    Ok(())
                } else {
                    Err(StoreError::Conflict)
                };
                (applied, result)
            }
            Err(err) => (0, Err(err)),
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Commits are already durable; answer whether the database is reachable.
        self.call(|conn| conn.query("SELECT 1", &[]).map(|_| ()))
    }

    fn shared(&self) -> bool {
        true
    }
}

/// Test support: a fresh, empty database schema per test, from `STINT_TEST_POSTGRES_URL`.
pub mod testing {
    use super::*;

    /// The URL of the test cluster, or `None` (with a loud message) when it is not set.
    pub fn url(test: &str) -> Option<String> {
        match std::env::var("STINT_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                eprintln!(
                    "SKIPPED {test}: STINT_TEST_POSTGRES_URL is not set (scripts/with-postgres.sh sets it)"
                );
                None
            }
        }
    }

    /// Creates a new empty database on the test cluster and returns its URL.
    pub fn fresh_database(base_url: &str, name_hint: &str) -> Result<String, StoreError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let safe: String = name_hint
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(30)
            .collect();
        let name = format!("t_{safe}_{}_{n}", std::process::id());
        let (config, connector) = parse_config(base_url)?;
        let create = name.clone();
        std::thread::spawn(move || -> Result<(), StoreError> {
            let mut client = connect(&connector, &config)?;
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {create}"))
                .map_err(|e| map_err(&e))?;
            client
                .batch_execute(&format!("CREATE DATABASE {create}"))
                .map_err(|e| map_err(&e))
        })
        .join()
        .map_err(|_| io("thread panicked"))??;
        Ok(url_with_dbname(base_url, &name))
    }

    fn url_with_dbname(base_url: &str, name: &str) -> String {
        let (head, query) = match base_url.split_once('?') {
            Some((head, query)) => (head, Some(query)),
            None => (base_url, None),
        };
        let after_scheme = head.find("://").map_or(0, |at| at + 3);
        let base = match head[after_scheme..].find('/') {
            Some(slash) => &head[..after_scheme + slash],
            None => head,
        };
        match query {
            Some(query) => format!("{base}/{name}?{query}"),
            None => format!("{base}/{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract;

    fn store(test: &str) -> Option<PostgresStore> {
        let base = testing::url(test)?;
        let url = testing::fresh_database(&base, test).unwrap();
        Some(PostgresStore::open(&url, 4).unwrap())
    }

    #[test]
    fn contract_holds_on_postgres() {
        let Some(a) = store("contract_a") else { return };
        contract::conditional_batches_are_atomic(&a);
        let Some(b) = store("contract_b") else { return };
        contract::scans_are_ordered_and_paged(&b);
        let Some(c) = store("contract_c") else { return };
        contract::transact_retries_conflicts(&c);
        let Some(g) = store("contract_group") else {
            return;
        };
        contract::group_commits_apply_a_prefix(&g);
        let Some(d) = store("contract_lease") else {
            return;
        };
        crate::store::lease::tests::one_holder_at_a_time(&d);
    }

    /// A server that accepts and then never answers (a stalled PostgreSQL, a proxy whose
    /// backend hangs) fails the attempt within its limit instead of holding the thread.
    #[test]
    fn a_server_that_never_answers_the_startup_fails_within_the_limit() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = std::thread::spawn(move || {
            let (socket, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_secs(4));
            drop(socket);
        });
        let url =
            format!("postgres://stint@127.0.0.1:{port}/stint?connect_timeout=1&sslmode=disable");
        let (config, connector) = parse_config(&url).unwrap();
        assert_eq!(startup_limit(&config, &connector), Duration::from_secs(2));
        let started = std::time::Instant::now();
        let err = connect(&connector, &config)
            .err()
            .expect("a stalled server refused");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(4), "gave up after {took:?}");
        assert!(err.to_string().contains("no answer within 2s"), "{err}");
        // The abandoned attempt ends with the server's connection and is no longer counted.
        held.join().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while HUNG_CONNECTS.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(HUNG_CONNECTS.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn migrations_are_idempotent_and_versioned() {
        let Some(base) = testing::url("migrations") else {
            return;
        };
        let url = testing::fresh_database(&base, "migrations").unwrap();
        // Concurrent first starts apply each migration once.
        let runs: Vec<_> = (0..3)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || migrate(&url))
            })
            .collect();
        for run in runs {
            assert_eq!(run.join().unwrap().unwrap(), schema_version());
        }
        assert_eq!(migrate(&url).unwrap(), schema_version());
    }

    #[test]
    fn prefix_scans_with_high_bytes() {
        let Some(store) = store("prefix_high") else {
            return;
        };
        let batch = Batch {
            expects: vec![],
            writes: vec![
                (Table::Users, vec![0xff, 1], Some(b"a".to_vec())),
                (Table::Users, vec![0xff, 0xff], Some(b"b".to_vec())),
                (Table::Users, vec![0xfe], Some(b"c".to_vec())),
                (Table::Groups, vec![0xff, 2], Some(b"d".to_vec())),
            ],
        };
        store.commit(&batch).unwrap();
        let keys: Vec<_> = store
            .scan(Table::Users, &[0xff], None, 10)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, [vec![0xff, 1], vec![0xff, 0xff]]);
        let after = store
            .scan(Table::Users, &[0xff], Some(&[0xff, 1]), 10)
            .unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(
            store.last(Table::Users).unwrap().unwrap().0,
            vec![0xff, 0xff]
        );
        store.flush().unwrap();
    }

    /// A dropped connection (database restart, failover) fails the call in flight with an
    /// I/O error at worst, and the next call reconnects: no restart of Stint needed.
    #[test]
    fn dropped_connections_are_reopened() {
        let Some(base) = testing::url("reconnect") else {
            return;
        };
        let url = testing::fresh_database(&base, "reconnect").unwrap();
        let store = PostgresStore::open(&url, 2).unwrap();
        let put = |value: &[u8]| {
            store.commit(&Batch {
                expects: vec![],
                writes: vec![(Table::Meta, b"k".to_vec(), Some(value.to_vec()))],
            })
        };
        put(b"1").unwrap();
        store.get(Table::Meta, b"k").unwrap();
        let (config, _) = parse_config(&url).unwrap();
        let killed = std::thread::spawn(move || {
            let mut admin = config.connect(postgres::NoTls).unwrap();
            admin
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    &[],
                )
                .unwrap()
                .len()
        })
        .join()
        .unwrap();
        assert!(killed >= 1, "the store's connections were open");
        let mut failures = 0;
        for _ in 0..4 {
            match store.get(Table::Meta, b"k") {
                Ok(value) => assert_eq!(value.as_deref(), Some(&b"1"[..])),
                Err(StoreError::Io(_)) => failures += 1,
                Err(other) => panic!("{other}"),
            }
        }
        assert!(failures <= 2, "each connection fails at most once");
        put(b"2").unwrap();
        assert_eq!(
            store.get(Table::Meta, b"k").unwrap().as_deref(),
            Some(&b"2"[..])
        );
        store.flush().unwrap();
    }

    #[test]
    fn an_unreachable_database_is_an_io_error() {
        // Port 1 on loopback refuses at once.
        let err = PostgresStore::open("postgres://stint@127.0.0.1:1/stint", 1)
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::Io(_)), "{err}");
    }

    #[test]
    fn urls_are_redacted() {
        for (url, want) in [
            (
                "postgres://stint:hunter2@db:5432/stint",
                "postgres://stint:***@db:5432/stint",
            ),
            ("postgres://db/stint", "postgres://db/stint"),
            (
                "postgresql://u@db/x?password=hunter2&sslmode=disable",
                "postgresql://u@db/x?password=***&sslmode=disable",
            ),
            // The user info ends at the first `@`, as tokio-postgres reads it.
            ("postgres://stint:pa/ss@db/x", "postgres://stint:***@db/x"),
            ("postgres://u:p?w/x@db/x", "postgres://u:***@db/x"),
            // Every password parameter (tokio-postgres takes the last), %-encoded too.
            (
                "postgres://u@db/x?password=a&password=b",
                "postgres://u@db/x?password=***&password=***",
            ),
            (
                "postgres://u@db/x?pass%77ord=b",
                "postgres://u@db/x?pass%77ord=***",
            ),
            ("postgres://u@db/x?%zz=b", "postgres://u@db/x?%zz=***"),
            (
                "host=db password='hunter 2'",
                "<key=value connection string, not shown: it has a password>",
            ),
            ("host=db user=stint", "host=db user=stint"),
        ] {
            assert_eq!(redact_url(url), want);
        }
        assert!(is_postgres_url("postgresql://x"));
        assert!(!is_postgres_url("/var/lib/stint"));
    }

    #[test]
    fn prefix_end_increments_the_last_byte_below_max() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(&[]), None);
    }
}
