/**
 * Database-per-service: each service that mixes this in gets its own database (a SQLite file, or
 * the PostgreSQL database of its `<SERVICE>_DATABASE_URL`) through moleculer-db and the Sequelize
 * adapter. Schema comes from the service's migrations, run at start-up with umzug, never from
 * `sync()`. No service reaches another's database: the URL is chosen here by service name only.
 */
import fs from "node:fs";
import path from "node:path";
import DbService from "moleculer-db";
import SequelizeAdapter from "moleculer-db-adapter-sequelize";
import type { Context, ServiceSchema } from "moleculer";
import { Sequelize, QueryInterface, ModelAttributes, ModelOptions, ModelStatic, Model, Transaction } from "sequelize";
import { Umzug, SequelizeStorage } from "umzug";
import { getConfig, maskUrl } from "../lib/config";
import { ServiceUnavailableError } from "../lib/errors";
import { lifecycle } from "../lib/service";
import { countedPage, type Page } from "../lib/params";
import { runSql, runTransaction, type SqlOptions, type SqlResult } from "../lib/sql";

export interface Migration {
	name: string;
	up(qi: QueryInterface, sequelize: Sequelize): Promise<void>;
	down(qi: QueryInterface, sequelize: Sequelize): Promise<void>;
}

export interface ModelDefinition {
	name: string;
	define: ModelAttributes;
	options?: ModelOptions;
}

export interface DbSettings {
	/** The database URL of this service: `sqlite:<file>` or `postgres://…`. */
	databaseUrl: string;
	/** Attempts to reach the database at start before the service gives up. */
	dbConnectAttempts?: number;
	idField?: string;
}

/** What a service gets from the mixin, for typing `this`. */
export interface DbMethods {
	sequelize: Sequelize;
	model: ModelStatic<Model>;
	isDbReady(): Promise<boolean>;
	dbDialect(): "postgres" | "sqlite";
	transaction<T>(fn: (t: Transaction) => Promise<T>): Promise<T>;
	/** One statement on the driver's connection, `$1`… placeholders (lib/sql.ts): for the hot paths. */
	sql<R = Record<string, unknown>>(text: string, params?: unknown[], t?: Transaction, opts?: SqlOptions): Promise<SqlResult<R>>;
	/** Page `pageNo` of a list, as statements on the driver (PageQuery), each row through `toItem`. */
	pageOf<R, T>(query: PageQuery, pageNo: number, pageSize: number, toItem: (row: R) => T): Promise<Page<T>>;
	/** `SELECT count(*) FROM <from>` (a PageQuery's table and WHERE) on the driver. */
	countOf(from: string, values?: unknown[], opts?: SqlOptions): Promise<number>;
}

/**
 * A list as statements on the driver: `SELECT <columns> FROM <from> ORDER BY <order>` with `values`
 * for the `$n` placeholders in `from` (its table and WHERE). The page is that with LIMIT and
 * OFFSET; the total, only when the page cannot tell it (lib/params countedPage), is
 * `SELECT count(*) FROM <from>`: the same rows, counted.
 */
export interface PageQuery {
	columns: string;
	from: string;
	order: string;
	values?: unknown[];
	opts?: SqlOptions;
}

/** A row as plain values, whether Sequelize answered a model instance or a raw row. */
export function plainRow<T>(row: Model | T): T {
	const r = row as { get?: (opts: { plain: true }) => unknown };
	return (typeof r.get === "function" ? r.get({ plain: true }) : row) as T;
}

/** Start-up failure: one line naming the (masked) URL, no stack, so the runner's log says it all. */
export class DatabaseUnreachableError extends Error {
	constructor(service: string, url: string, cause: string) {
		super(`The ${service} database at ${maskUrl(url)} cannot be reached: ${cause}`);
		this.name = "DatabaseUnreachableError";
		this.stack = `${this.name}: ${this.message}`;
	}
}

const CONNECTION_ERRORS = new Set([
	"SequelizeConnectionError",
	"SequelizeConnectionRefusedError",
	"SequelizeConnectionTimedOutError",
	"SequelizeHostNotFoundError",
	"SequelizeHostNotReachableError",
	"SequelizeAccessDeniedError",
	"SequelizeConnectionAcquireTimeoutError",
]);

/** PostgreSQL's connection-exception class (08), shutdown (57P01-03), and socket errors. */
const CONNECTION_CODES = /^(08\d{3}|57P0[1-3]|ECONNRESET|ECONNREFUSED|ETIMEDOUT|EPIPE|ENOTFOUND|SQLITE_BUSY)$/;
/** node-postgres reports a connection lost mid-query without a code, only in words. */
const CONNECTION_MESSAGES = /Connection terminated|not queryable|timeout exceeded when trying to connect|Connection ended/i;

export function isConnectionError(err: unknown): boolean {
	const e = err as { name?: string; parent?: { code?: string; message?: string } };
	if (e?.name && CONNECTION_ERRORS.has(e.name)) return true;
	const cause = e?.parent;
	if (!cause) return false;
	return CONNECTION_CODES.test(String(cause.code ?? "")) || CONNECTION_MESSAGES.test(String(cause.message ?? ""));
}

interface SqliteConnection {
	exec(sql: string, cb: (err: Error | null) => void): void;
}

function setPragmas(db: SqliteConnection): Promise<void> {
	return new Promise((resolve, reject) =>
		db.exec("PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON;", err => (err ? reject(err) : resolve())),
	);
}

/** `poolMax`: the most connections the pool opens on PostgreSQL (SQLite keeps its own). */
export function createSequelize(url: string, poolMax = 10): Sequelize {
	if (url.startsWith("sqlite:")) {
		const storage = url.slice("sqlite:".length).replace(/^\/\/(?=\/)/, "");
		if (storage !== ":memory:") fs.mkdirSync(path.dirname(storage), { recursive: true });
		const sequelize = new Sequelize({ dialect: "sqlite", storage, logging: false });
		// WAL lets readers run beside the one writer; the busy timeout queues writers instead of
		// failing them with SQLITE_BUSY under concurrent requests. Sequelize's SQLite dialect opens its
		// connections without running the afterConnect hooks, so the pragmas are set here, once for
		// each connection it hands out (without this they were never set: journal_mode stayed
		// "delete" and busy_timeout sqlite3's 1000 ms).
		const manager = sequelize.connectionManager as unknown as { getConnection(options?: object): Promise<SqliteConnection> };
		const getConnection = manager.getConnection.bind(manager);
		const prepared = new WeakMap<SqliteConnection, Promise<void>>();
		manager.getConnection = async options => {
			const connection = await getConnection(options);
			if (!prepared.has(connection)) prepared.set(connection, setPragmas(connection));
			await prepared.get(connection);
			return connection;
		};
		return sequelize;
	}
	return new Sequelize(url, {
		dialect: "postgres",
		logging: false,
		pool: { max: poolMax, min: 0, acquire: 5000, idle: 10_000 },
		dialectOptions: { connectionTimeoutMillis: 3000 },
	});
}

/**
 * The Sequelize adapter with migrations instead of `model.sync()`. Extended by subclassing, as
 * moleculer-db's adapters are meant to be.
 */
class MigratingSequelizeAdapter extends SequelizeAdapter {
	db!: Sequelize;
	model!: ModelStatic<Model>;
	declare service: { name: string; schema: { model: ModelDefinition }; logger: { info(...a: unknown[]): void } } & Record<string, unknown>;

	constructor(
		private readonly url: string,
		private readonly migrations: Migration[],
	) {
		super(url);
	}

	override async connect(): Promise<void> {
		this.db = createSequelize(this.url, getConfig().dbPoolMax);
		await this.db.authenticate();
		await this.migrate();
		const def = this.service.schema.model;
		this.model = this.db.define(def.name, def.define, def.options);
		this.service.model = this.model;
		this.service.sequelize = this.db;
	}

	/** Safe to call twice: hot reload stops a service that the broker then stops again. */
	override async disconnect(): Promise<void> {
		const db = this.db;
		if (!db) return;
		this.db = undefined as unknown as Sequelize;
		await db.close();
	}

	private async migrate(): Promise<void> {
		const umzug = new Umzug<QueryInterface>({
			migrations: this.migrations.map(m => ({
				name: m.name,
				up: ({ context }) => m.up(context, this.db),
				down: ({ context }) => m.down(context, this.db),
			})),
			context: this.db.getQueryInterface(),
			storage: new SequelizeStorage({ sequelize: this.db, tableName: "schema_migrations" }),
			logger: undefined,
		});
		const run = async () => {
			const done = await umzug.up();
			if (done.length > 0)
				this.service.logger.info(`Applied migrations: ${done.map(m => m.name).join(", ")}`);
		};
		if (this.db.getDialect() !== "postgres") return run();
		// Several nodes of one service may start together: a transaction-scoped advisory lock lets
		// one of them migrate while the others wait, then find nothing left to do.
		await this.db.transaction(async t => {
			await this.db.query("SELECT pg_advisory_xact_lock(hashtext(:key))", {
				replacements: { key: `carsi-migrations-${this.service.name}` },
				transaction: t,
			});
			await run();
		});
	}
}

const { started: _retryForever, ...DbServiceWithoutStart } = DbService as unknown as ServiceSchema;

export function DbMixin(opts: { model: ModelDefinition; migrations: Migration[] }): Partial<ServiceSchema> {
	return {
		// moleculer-db's own `started` retries a lost database forever; ours fails clearly instead.
		mixins: [DbServiceWithoutStart as ServiceSchema],
		model: opts.model,
		settings: { idField: "id", dbConnectAttempts: 5 },
		// moleculer-db's generic actions take `query`, `search` and any field: the services expose
		// only their own validated actions.
		actions: {
			find: false,
			count: false,
			list: false,
			create: false,
			insert: false,
			get: false,
			update: false,
			remove: false,
		},
		hooks: {
			error: {
				// A lost database answers 503, never a 500 with the driver's message.
				"*"(this: unknown, _ctx: Context, err: Error) {
					if (isConnectionError(err)) throw new ServiceUnavailableError("The database is unavailable, try again shortly");
					throw err;
				},
			},
		},
		methods: {
			async isDbReady(this: DbMethods): Promise<boolean> {
				if (!this.sequelize) return false;
				try {
					await this.sequelize.query("SELECT 1");
					return true;
				} catch {
					return false;
				}
			},
			dbDialect(this: DbMethods): "postgres" | "sqlite" {
				return this.sequelize.getDialect() === "postgres" ? "postgres" : "sqlite";
			},
			sql<R>(this: DbMethods, text: string, params: unknown[] = [], t?: Transaction, opts?: SqlOptions): Promise<SqlResult<R>> {
				return runSql<R>(this.sequelize, text, params, t, opts);
			},
			async pageOf<R, T>(this: DbMethods, query: PageQuery, pageNo: number, pageSize: number, toItem: (row: R) => T): Promise<Page<T>> {
				const { columns, from, order, values = [], opts } = query;
				const n = values.length;
				const page = `SELECT ${columns} FROM ${from} ORDER BY ${order} LIMIT $${n + 1} OFFSET $${n + 2}`;
				const { rows } = await this.sql<R>(page, [...values, pageSize, (pageNo - 1) * pageSize], undefined, opts);
				return countedPage(rows.map(toItem), pageNo, pageSize, () => this.countOf(from, values, opts));
			},
			async countOf(this: DbMethods, from: string, values: unknown[] = [], opts?: SqlOptions): Promise<number> {
				return Number((await this.sql<{ n: number | string }>(`SELECT count(*) AS n FROM ${from}`, values, undefined, opts)).rows[0].n);
			},
			/** On the driver's connection (lib/sql.ts runTransaction; on SQLite in the process's write queue); `t` works for model calls too. */
			transaction<T>(this: DbMethods, fn: (t: Transaction) => Promise<T>): Promise<T> {
				return runTransaction(this.sequelize, fn);
			},
		},
		created: lifecycle<{ adapter: unknown; settings: DbSettings; broker: unknown }>(function () {
			const adapter = new MigratingSequelizeAdapter(this.settings.databaseUrl, opts.migrations);
			adapter.init(this.broker as never, this as never);
			this.adapter = adapter;
		}),
		started: lifecycle<{
			name: string;
			settings: DbSettings;
			adapter: MigratingSequelizeAdapter;
			broker: { runner?: unknown };
			logger: { warn(...a: unknown[]): void; fatal(...a: unknown[]): void };
		}>(async function () {
			const attempts = Math.max(1, this.settings.dbConnectAttempts ?? 5);
			let lastError = "";
			for (let attempt = 1; attempt <= attempts; attempt++) {
				try {
					await this.adapter.connect();
					return;
				} catch (err) {
					lastError = describe(err);
					await this.adapter.db?.close().catch(() => undefined);
					// A migration that failed is not a reachability problem: stop at once.
					if ((err as Error).name === "MigrationError") throw err;
					if (attempt < attempts) {
						this.logger.warn(`Database not reachable yet (${lastError}), attempt ${attempt}/${attempts}`);
						await new Promise(r => setTimeout(r, 1000));
					}
				}
			}
			const error = new DatabaseUnreachableError(this.name, this.settings.databaseUrl, lastError);
			if (this.broker.runner) {
				// Under moleculer-runner the broker and then the runner would each log the error: say
				// it once and stop, as Moleculer's own broker.fatal does.
				this.logger.fatal(error.message);
				process.exit(1);
			}
			throw error;
		}),
	};
}

function describe(err: unknown): string {
	const e = err as { message?: string; parent?: { message?: string }; original?: { code?: string } };
	const message = e?.parent?.message ?? e?.message ?? String(err);
	if (/database ".*" does not exist/.test(message)) return `${message} (create it first, e.g. createdb)`;
	return message;
}
