/**
 * One SQL statement on the driver's own connection (pg's Client, sqlite3's Database): the
 * transaction's, or one from Sequelize's pool. For the few statements an order runs many times:
 * Sequelize spends far more CPU around a query than the driver does (options cloned, a stack trace
 * captured per query, results reshaped), and `model.create/update` add validation and hooks on top.
 * Errors come back as Sequelize's, so `isConnectionError` and `instanceof UniqueConstraintError`
 * see them as they would a Sequelize query's.
 *
 * runTransaction does the same for BEGIN and COMMIT, with a Sequelize Transaction that model calls
 * can join.
 *
 * On SQLite every write of the process, a transaction or one statement outside one, takes its turn
 * in one queue per database (queueSqliteWrite), and the writes that waited together share one
 * COMMIT (runGroup). On PostgreSQL a statement with parameters is a named prepared statement.
 *
 * The text is PostgreSQL's, with `$1`, `$2`… placeholders; on SQLite they become `?1`, `?2`…,
 * which bind by the same numbers. Keep statements portable (both run `RETURNING` and
 * `ON CONFLICT … DO NOTHING`) or branch on the dialect.
 */
import { DatabaseError, Transaction, UniqueConstraintError, type Sequelize } from "sequelize";

export interface SqlResult<R> {
	rows: R[];
	/** Rows the statement changed (INSERT, UPDATE, DELETE) or returned. */
	count: number;
}

export interface SqlOptions {
	/**
	 * false: on PostgreSQL the statement runs unnamed, planned for its own values every time. A
	 * named one gets a generic plan after five runs when that looks no dearer, and a generic plan
	 * of `LIKE $1` cannot tell a rare pattern from one that most rows match. SQLite prepares every
	 * statement either way (its plan does not depend on the values bound).
	 */
	prepared?: boolean;
}

interface PgClient {
	query(query: { name: string; text: string; values: unknown[] }): Promise<{ rows: unknown[]; rowCount: number | null }>;
	query(text: string, values: unknown[]): Promise<{ rows: unknown[]; rowCount: number | null }>;
}
interface SqliteStatement {
	all(params: unknown[], cb: (err: Error | null, rows: unknown[]) => void): void;
	run(params: unknown[], cb: (this: { changes: number }, err: Error | null) => void): void;
	finalize(cb?: () => void): void;
}
interface SqliteDb {
	prepare(sql: string, cb: (err: Error | null) => void): SqliteStatement;
	close(cb?: (err: Error | null) => void): void;
}
interface ConnectionManager {
	getConnection(options: object): Promise<unknown>;
	releaseConnection(connection: unknown): Promise<void> | void;
	destroyConnection(connection: unknown): Promise<void>;
	connections?: Record<string, unknown>;
}

/** SQLite: the one connection of a process's transactions (queued, one at a time), kept open. */
const SQLITE_TRANSACTIONS = "transactions";

/**
 * Per statement text: SQLite's text, whether it may answer rows, whether it writes (anything but a
 * SELECT). One that may answer rows runs with `all`, to its end: `run` steps once, so it would
 * answer none of them, and a prepared statement left at its first row stays open (its read with
 * it) until it next runs.
 */
const sqliteText = new Map<string, { text: string; returnsRows: boolean; writes: boolean }>();

function sqliteStatement(text: string): { text: string; returnsRows: boolean; writes: boolean } {
	let statement = sqliteText.get(text);
	if (!statement) {
		const select = /^\s*SELECT\b/i.test(text);
		const returnsRows = select || /^\s*(WITH|VALUES|PRAGMA|EXPLAIN)\b/i.test(text) || /\bRETURNING\b/i.test(text);
		statement = { text: text.replace(/\$(\d+)/g, "?$1"), returnsRows, writes: !select };
		sqliteText.set(text, statement);
	}
	return statement;
}

/** A time as Sequelize writes DATE columns on SQLite: text in UTC that sorts in time order. */
function sqliteTime(date: Date): string {
	return `${date.toISOString().slice(0, 23).replace("T", " ")} +00:00`;
}

/** A write waiting for its turn: one statement outside a transaction, or a transaction's work. */
type SqliteWrite = { kind: "statement"; text: string; params: unknown[] } | { kind: "transaction"; fn: (t: Transaction) => Promise<unknown> };
interface QueuedWrite {
	write: SqliteWrite;
	resolve(value: unknown): void;
	reject(err: unknown): void;
}
interface WriteQueue {
	waiting: QueuedWrite[];
	draining: boolean;
}
const sqliteWrites = new WeakMap<Sequelize, WriteQueue>();

/** At most this many waiting writes share one commit. */
const GROUP_COMMIT_MAX = 64;

/**
 * SQLite: runs `write` after every earlier write of this process on the same database has settled.
 * SQLite has one writer at a time, and a writer that finds the file locked sleeps in back-offs of
 * up to 100 ms before it tries again: against a steady stream of transactions a single statement
 * from elsewhere (the outbox relay marking its batch sent, a consumer's update) could wait for
 * seconds, losing to whoever came later. In this queue every write of the process, a transaction
 * (runTransaction) or one statement outside one (runSql), takes its turn in arrival order.
 *
 * Writes that waited together commit together (group commit, runGroup): each COMMIT waits for the
 * disk (`synchronous=FULL`), and with the queue full that wait was most of a write's turn. Each
 * caller is still answered only once its own write has committed.
 */
function queueSqliteWrite<T>(sequelize: Sequelize, write: SqliteWrite): Promise<T> {
	let queue = sqliteWrites.get(sequelize);
	if (!queue) {
		queue = { waiting: [], draining: false };
		sqliteWrites.set(sequelize, queue);
	}
	const mine = queue;
	return new Promise<T>((resolve, reject) => {
		mine.waiting.push({ write, resolve: resolve as (value: unknown) => void, reject });
		if (!mine.draining) void drain(sequelize, mine);
	});
}

async function drain(sequelize: Sequelize, queue: WriteQueue): Promise<void> {
	queue.draining = true;
	try {
		while (queue.waiting.length > 0) {
			const group = queue.waiting.splice(0, GROUP_COMMIT_MAX);
			if (group.length === 1) await runAlone(sequelize, group[0]);
			else await runGroup(sequelize, queue, group);
		}
	} finally {
		queue.draining = false;
	}
}

/** A write that waited alone: a statement on its own (autocommit), or its own transaction. */
async function runAlone(sequelize: Sequelize, queued: QueuedWrite): Promise<void> {
	const { write } = queued;
	try {
		queued.resolve(write.kind === "statement" ? await execute(sequelize, write.text, write.params) : await transaction(sequelize, false, write.fn));
	} catch (err) {
		queued.reject(err);
	}
}

/**
 * SQLite's errors after which a transaction may have been rolled back already (FULL, IOERR, BUSY
 * and NOMEM, says sqlite.org/lang_transaction.html; the rest here are as bad). After any other
 * error of a statement, SQLite has undone that statement alone and the transaction goes on.
 */
const MAY_END_TRANSACTION = new Set(["SQLITE_FULL", "SQLITE_IOERR", "SQLITE_BUSY", "SQLITE_NOMEM", "SQLITE_INTERRUPT", "SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_CANTOPEN", "SQLITE_LOCKED", "SQLITE_MISUSE", "SQLITE_ABORT"]);

/** The driver's code of an error (SQLite's result code, PostgreSQL's SQLSTATE), wrapped by asSequelizeError or not. */
export function errorCode(err: unknown): string {
	const e = err as { code?: string; parent?: { code?: string } };
	return String(e.parent?.code ?? e.code ?? "");
}

/**
 * Writes that waited together, in one transaction and one COMMIT. A transaction's work runs under
 * a savepoint: when it throws, its own changes are rolled back and only its caller gets the error.
 * A statement that fails undoes itself alone (SQLite's statement journal), unless its error may
 * have ended the transaction (MAY_END_TRANSACTION). That, or a savepoint that cannot be rolled
 * back to, leaves the transaction in doubt: it is rolled back, the connection destroyed, every
 * write already run in it answered with the error (none of them committed) and the ones not yet
 * run go back to the head of the queue. A BEGIN that fails answers every write of the group with
 * its error, as each would have failed alone. Callers are answered after the COMMIT, in their order.
 */
async function runGroup(sequelize: Sequelize, queue: WriteQueue, group: QueuedWrite[]): Promise<void> {
	const manager = sequelize.connectionManager as unknown as ConnectionManager;
	let connection: unknown;
	try {
		connection = await manager.getConnection({ uuid: SQLITE_TRANSACTIONS });
	} catch (err) {
		for (const queued of group) queued.reject(err);
		return;
	}
	const shared = onConnection(sequelize, connection);
	const control = (statement: string) => execute(sequelize, statement, [], shared);
	const outcomes: Array<{ queued: QueuedWrite; value?: unknown; error?: unknown; t?: Transaction }> = [];
	try {
		await control("BEGIN IMMEDIATE");
	} catch (err) {
		// As each transaction alone would have failed.
		await destroy(manager, connection, false);
		for (const queued of group) queued.reject(err);
		return;
	}
	let doubt: unknown;
	let next = 0;
	for (; doubt === undefined && next < group.length; next++) {
		const queued = group[next];
		const { write } = queued;
		if (write.kind === "statement") {
			try {
				outcomes.push({ queued, value: await execute(sequelize, write.text, write.params, shared) });
			} catch (err) {
				outcomes.push({ queued, error: err });
				if (MAY_END_TRANSACTION.has(errorCode(err))) doubt = err;
			}
			continue;
		}
		const t = onConnection(sequelize, connection);
		try {
			await control("SAVEPOINT queued_write");
		} catch (err) {
			outcomes.push({ queued, error: err });
			doubt = err;
			continue;
		}
		try {
			const result = await write.fn(t);
			await control("RELEASE queued_write");
			outcomes.push({ queued, value: { result, t }, t });
		} catch (err) {
			Object.assign(t, { finished: "rollback" });
			outcomes.push({ queued, error: err });
			try {
				await control("ROLLBACK TO queued_write");
				await control("RELEASE queued_write");
			} catch (broken) {
				doubt = broken;
			}
		}
	}
	if (doubt === undefined) {
		try {
			await control("COMMIT");
		} catch (err) {
			doubt = err;
		}
	}
	if (doubt !== undefined) {
		await control("ROLLBACK").catch(() => undefined);
		await destroy(manager, connection, false);
		queue.waiting.unshift(...group.slice(next));
		for (const o of outcomes) {
			if (o.t) Object.assign(o.t, { finished: "rollback" });
			o.queued.reject(o.error ?? doubt);
		}
		return;
	}
	for (const o of outcomes) {
		if (o.t) Object.assign(o.t, { finished: "commit" });
		if (o.error !== undefined) o.queued.reject(o.error);
		else o.queued.resolve(o.value);
	}
}

/**
 * One statement, in transaction `t` or alone. On SQLite a write outside a transaction waits for its
 * turn among the process's writes (queueSqliteWrite); inside one it runs in the transaction's turn.
 */
export function runSql<R>(sequelize: Sequelize, text: string, params: unknown[], t?: Transaction, opts?: SqlOptions): Promise<SqlResult<R>> {
	if (!t && sequelize.getDialect() !== "postgres" && sqliteStatement(text).writes) return queueSqliteWrite(sequelize, { kind: "statement", text, params });
	return execute<R>(sequelize, text, params, t, opts);
}

async function execute<R>(sequelize: Sequelize, text: string, params: unknown[], t?: Transaction, opts?: SqlOptions): Promise<SqlResult<R>> {
	const ended = t as unknown as { finished?: string; id: string } | undefined;
	if (ended?.finished) throw new Error(`${ended.finished} has been called on this transaction (${ended.id}), you can no longer use it`);
	const own = t ? undefined : (sequelize.connectionManager as unknown as ConnectionManager);
	const connection = t ? (t as unknown as { connection: unknown }).connection : await own!.getConnection({ type: "write" });
	try {
		return sequelize.getDialect() === "postgres" ? await onPostgres<R>(connection as PgClient, text, params, opts?.prepared !== false) : await onSqlite<R>(connection as SqliteDb, text, params);
	} catch (err) {
		const code = String((err as { code?: string }).code ?? "");
		// Not an answer of the server (a SQLSTATE) but a broken socket: the pool must not hand it out again.
		if (sequelize.getDialect() === "postgres" && !/^[0-9A-Z]{5}$/.test(code)) Object.assign(connection as object, { _invalid: true });
		throw asSequelizeError(err as Error & { code?: string }, text, params);
	} finally {
		if (own) await own.releaseConnection(connection);
	}
}

/**
 * PostgreSQL: a statement with parameters runs as a named prepared statement, so each connection
 * parses and plans it once (pg sends Parse the first time on a connection, then only Bind and
 * Execute; the server keeps the plan, generic after five runs when that costs no more). Unnamed,
 * the server parsed, analysed and planned every statement of every order again: a third of its
 * CPU under the order bench. The names are the process's own, one per text, for at most
 * PG_NAMED texts (each connection keeps every one it has run until it closes); past them a text runs
 * unnamed, as do BEGIN, COMMIT and the like, which go by the simple protocol. A statement must
 * name its columns (no `SELECT *`, `RETURNING *`): a prepared one whose table changed its columns
 * fails with "cached plan must not change result type".
 */
const PG_NAMED = 100;
const pgNames = new Map<string, string>();

function pgName(text: string): string | undefined {
	let name = pgNames.get(text);
	if (name === undefined && pgNames.size < PG_NAMED) {
		name = `carsi_${pgNames.size + 1}`;
		pgNames.set(text, name);
	}
	return name;
}

async function onPostgres<R>(client: PgClient, text: string, params: unknown[], prepared: boolean): Promise<SqlResult<R>> {
	// pg copies a query given as an object (Object.defineProperties, about 1 µs), not one given as text.
	const name = prepared && params.length > 0 ? pgName(text) : undefined;
	const result = await (name ? client.query({ name, text, values: params }) : client.query(text, params));
	return { rows: result.rows as R[], count: result.rowCount ?? result.rows.length };
}

/**
 * SQLite: each connection's statements, prepared once. `db.run(sql)` and `db.all(sql)` prepare a
 * new statement, run it and finalize it, three trips through libuv's thread pool for each; a
 * prepared statement runs in one (bound afresh, stepped to its end under the connection's mutex,
 * so callers on one connection never see each other's half-run statements). A statement whose
 * run failed is finalized and prepared again next time; the connection's `close` first
 * finalizes them all (SQLite will not close a connection with statements open). A connection
 * keeps at most PREPARED_KEPT (texts that vary, as the outbox's `IN ($2, $3…)` by batch size,
 * could otherwise pile up): the oldest is finalized, after the calls queued on it.
 */
const PREPARED_KEPT = 200;

interface Prepared {
	statement: SqliteStatement;
	/** The calls waiting on the statement: sqlite3 drops them without a word when it fails to prepare. */
	waiting: Set<(err: Error) => void>;
	/** Out of its connection's statements (if still there), finalized unless sqlite3 has done it. */
	forget(finalize: boolean): void;
}
const preparedBy = new WeakMap<SqliteDb, Map<string, Prepared>>();

function preparedOn(db: SqliteDb, sql: string): Prepared {
	let statements = preparedBy.get(db);
	if (!statements) {
		const all = new Map<string, Prepared>();
		statements = all;
		preparedBy.set(db, all);
		const close = db.close.bind(db);
		db.close = (cb?: (err: Error | null) => void) => {
			const open = [...all.values()];
			all.clear();
			void Promise.all(open.map(p => new Promise<void>(resolve => p.statement.finalize(() => resolve())))).then(() => close(cb));
		};
	}
	const known = statements.get(sql);
	if (known) return known;
	const mine = statements;
	const entry: Prepared = {
		// Database#prepare calls back only with an error (the statement is then finalized).
		statement: db.prepare(sql, err => {
			if (!err) return;
			entry.forget(false);
			for (const fail of entry.waiting) fail(err);
			entry.waiting.clear();
		}),
		waiting: new Set(),
		forget(finalize) {
			if (mine.get(sql) !== entry) return;
			mine.delete(sql);
			if (finalize) entry.statement.finalize(() => undefined);
		},
	};
	statements.set(sql, entry);
	// The oldest goes; sqlite3 runs its finalize after the calls already queued on it.
	if (statements.size > PREPARED_KEPT) statements.values().next().value!.forget(true);
	return entry;
}

function onSqlite<R>(db: SqliteDb, text: string, params: unknown[]): Promise<SqlResult<R>> {
	const values = params.map(v => (v instanceof Date ? sqliteTime(v) : v));
	const { text: sql, returnsRows } = sqliteStatement(text);
	const entry = preparedOn(db, sql);
	return new Promise((resolve, reject) => {
		entry.waiting.add(reject);
		const settle = (err: Error | null, result: () => SqlResult<R>) => {
			entry.waiting.delete(reject);
			if (!err) return resolve(result());
			entry.forget(true);
			reject(err);
		};
		if (returnsRows) entry.statement.all(values, (err, rows) => settle(err, () => ({ rows: rows as R[], count: rows.length })));
		else
			entry.statement.run(values, function (err) {
				settle(err, () => ({ rows: [], count: this.changes }));
			});
	});
}

function asSequelizeError(err: Error & { code?: string; sql?: string; parameters?: unknown }, text: string, params: unknown[]): Error {
	err.sql = text;
	err.parameters = params;
	const unique = err.code === "23505" || (err.code === "SQLITE_CONSTRAINT" && /UNIQUE constraint failed/.test(err.message));
	if (unique) return new UniqueConstraintError({ parent: err as never, message: err.message });
	return new DatabaseError(err as never);
}

/**
 * BEGIN, `fn`, COMMIT (ROLLBACK when `fn` throws) on one driver connection, with a Sequelize
 * Transaction around it, so statements of lib/sql and model calls (`{ transaction: t }`) join it
 * alike, and `t.afterCommit(fn)` runs `fn` once the COMMIT succeeded. Sequelize's own
 * transaction() sends BEGIN and COMMIT through its query machinery, and on SQLite opens and
 * closes a database connection for every transaction. On PostgreSQL the connection comes from
 * Sequelize's pool; on SQLite it is one kept open for this process's transactions, which
 * take their turn in the process's write queue (queueSqliteWrite): SQLite has one writer at a
 * time, and concurrent transactions would busy-wait with back-offs of up to 100 ms (under 100
 * concurrent orders they timed out). There BEGIN IMMEDIATE takes the write lock at once (a deferred
 * BEGIN that read first fails with SQLITE_BUSY when another wrote meanwhile). A connection whose
 * COMMIT or ROLLBACK failed is in an unknown state: it is destroyed, never reused.
 */
export async function runTransaction<T>(sequelize: Sequelize, fn: (t: Transaction) => Promise<T>): Promise<T> {
	const { result, t } = await (sequelize.getDialect() === "postgres"
		? transaction(sequelize, true, fn)
		: queueSqliteWrite<{ result: T; t: Transaction }>(sequelize, { kind: "transaction", fn }));
	// Sequelize's `t.afterCommit(fn)`, as its own commit() runs them (Sequelize 6 also runs them
	// after a COMMIT that failed; here only after one that succeeded), outside SQLite's write queue.
	// The transaction has committed whatever they do: they must not throw.
	for (const hook of (t as unknown as { _afterCommitHooks: Array<(t: Transaction) => unknown> })._afterCommitHooks) await hook.call(t, t);
	return result;
}

async function transaction<T>(sequelize: Sequelize, pg: boolean, fn: (t: Transaction) => Promise<T>): Promise<{ result: T; t: Transaction }> {
	const manager = sequelize.connectionManager as unknown as ConnectionManager;
	const connection = await manager.getConnection(pg ? { type: "write" } : { uuid: SQLITE_TRANSACTIONS });
	const t = onConnection(sequelize, connection);
	let healthy = true;
	const control = (statement: string) =>
		runSql(sequelize, statement, [], t).catch((err: Error) => {
			healthy = false;
			throw err;
		});
	let committed = false;
	let result: T;
	try {
		await control(pg ? "BEGIN" : "BEGIN IMMEDIATE");
		try {
			result = await fn(t);
		} catch (err) {
			await control("ROLLBACK").catch(() => undefined);
			throw err;
		}
		await control("COMMIT");
		committed = true;
	} finally {
		Object.assign(t, { finished: committed ? "commit" : "rollback" });
		if (!healthy) await destroy(manager, connection, pg);
		else if (pg) await manager.releaseConnection(connection);
	}
	return { result, t };
}

/** A Sequelize transaction object bound to `connection`, which runSql and Sequelize's queries then run on. */
function onConnection(sequelize: Sequelize, connection: unknown): Transaction {
	const t = new Transaction(sequelize, {});
	Object.assign(t, { connection });
	return t;
}

async function destroy(manager: ConnectionManager, connection: unknown, pg: boolean): Promise<void> {
	if (pg) {
		await manager.destroyConnection(connection).catch(() => undefined);
		return;
	}
	// The next transaction opens a fresh one.
	delete manager.connections?.[SQLITE_TRANSACTIONS];
	await new Promise<void>(resolve => (connection as { close(cb: () => void): void }).close(() => resolve()));
}
