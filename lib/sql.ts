/**
 * One SQL statement on the driver's own connection (pg's Client, sqlite3's Database): the
 * transaction's, or one from Sequelize's pool. For the few statements an order runs many times:
 * Sequelize spends far more CPU around a query than the driver does (options cloned, a stack trace
 * captured per query, results reshaped), and `model.create/update` add validation and hooks on top.
 * Errors come back as Sequelize's, so `isConnectionError` and `instanceof UniqueConstraintError`
 * see them as they would a Sequelize query's.
 *
 * The text is PostgreSQL's, with `$1`, `$2`… placeholders; on SQLite they become `?1`, `?2`…,
 * which bind by the same numbers. Keep statements portable (both run `RETURNING` and
 * `ON CONFLICT … DO NOTHING`) or branch on the dialect.
 */
import { DatabaseError, UniqueConstraintError, type Sequelize, type Transaction } from "sequelize";

export interface SqlResult<R> {
	rows: R[];
	/** Rows the statement changed (INSERT, UPDATE, DELETE) or returned. */
	count: number;
}

interface PgClient {
	query(text: string, values: unknown[]): Promise<{ rows: unknown[]; rowCount: number | null }>;
}
interface SqliteDb {
	all(sql: string, params: unknown[], cb: (err: Error | null, rows: unknown[]) => void): void;
	run(sql: string, params: unknown[], cb: (this: { changes: number }, err: Error | null) => void): void;
	serialize(queue: () => void): void;
}
interface ConnectionManager {
	getConnection(options: object): Promise<unknown>;
	releaseConnection(connection: unknown): Promise<void> | void;
}

const sqliteText = new Map<string, { text: string; returnsRows: boolean }>();

/** A time as Sequelize writes DATE columns on SQLite: text in UTC that sorts in time order. */
function sqliteTime(date: Date): string {
	return `${date.toISOString().slice(0, 23).replace("T", " ")} +00:00`;
}

export async function runSql<R>(sequelize: Sequelize, text: string, params: unknown[], t?: Transaction): Promise<SqlResult<R>> {
	const own = t ? undefined : (sequelize.connectionManager as unknown as ConnectionManager);
	const connection = t ? (t as unknown as { connection: unknown }).connection : await own!.getConnection({ type: "write" });
	try {
		return sequelize.getDialect() === "postgres" ? await onPostgres<R>(connection as PgClient, text, params) : await onSqlite<R>(connection as SqliteDb, text, params);
	} catch (err) {
		throw asSequelizeError(err as Error & { code?: string }, text, params);
	} finally {
		if (own) await own.releaseConnection(connection);
	}
}

async function onPostgres<R>(client: PgClient, text: string, params: unknown[]): Promise<SqlResult<R>> {
	const result = await client.query(text, params);
	return { rows: result.rows as R[], count: result.rowCount ?? result.rows.length };
}

function onSqlite<R>(db: SqliteDb, text: string, params: unknown[]): Promise<SqlResult<R>> {
	let statement = sqliteText.get(text);
	if (!statement) {
		statement = { text: text.replace(/\$(\d+)/g, "?$1"), returnsRows: /^\s*SELECT\b|\bRETURNING\b/i.test(text) };
		sqliteText.set(text, statement);
	}
	const values = params.map(v => (v instanceof Date ? sqliteTime(v) : v));
	const { text: sql, returnsRows } = statement;
	// In serialized mode, as Sequelize queues them: statements on one connection run one after another
	// (in sqlite3's default parallel mode, several would hold locks at once and stall a commit).
	return new Promise((resolve, reject) => db.serialize(() => {
		if (returnsRows) db.all(sql, values, (err, rows) => (err ? reject(err) : resolve({ rows: rows as R[], count: rows.length })));
		else db.run(sql, values, function (err) {
				if (err) reject(err);
				else resolve({ rows: [], count: this.changes });
			});
	}));
}

function asSequelizeError(err: Error & { code?: string; sql?: string; parameters?: unknown }, text: string, params: unknown[]): Error {
	err.sql = text;
	err.parameters = params;
	const unique = err.code === "23505" || (err.code === "SQLITE_CONSTRAINT" && /UNIQUE constraint failed/.test(err.message));
	if (unique) return new UniqueConstraintError({ parent: err as never, message: err.message });
	return new DatabaseError(err as never);
}
