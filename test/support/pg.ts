/**
 * PostgreSQL databases of one test run: created through the maintenance database, named uniquely
 * per run (carsi_t_<random>_<service>), dropped WITH (FORCE) at the end.
 */
import { randomBytes } from "node:crypto";
import { Client, type QueryResultRow } from "pg";
import { SERVERS } from "./servers";

/** The URL of `database` on the test server, with `password` when one is given (trust auth ignores it). */
export function pgUrl(database: string, password?: string): string {
	const u = new URL(SERVERS.postgres);
	u.pathname = `/${database}`;
	if (password !== undefined) u.password = password;
	return u.toString();
}

/** A database name no other run uses: carsi_t_<random>_<suffix>. */
export function uniqueDbName(suffix: string): string {
	return `carsi_t_${randomBytes(5).toString("hex")}_${suffix}`.toLowerCase();
}

function quoteIdent(name: string): string {
	if (!/^[a-z0-9_]+$/.test(name)) throw new Error(`refusing an unusual database name: ${name}`);
	return `"${name}"`;
}

async function withClient<T>(database: string, fn: (client: Client) => Promise<T>): Promise<T> {
	const client = new Client({ connectionString: pgUrl(database), connectionTimeoutMillis: 3000 });
	client.on("error", () => undefined);
	await client.connect();
	try {
		return await fn(client);
	} finally {
		await client.end().catch(() => undefined);
	}
}

export async function createDatabase(name: string): Promise<void> {
	await withClient("postgres", c => c.query(`CREATE DATABASE ${quoteIdent(name)}`));
}

export async function dropDatabase(name: string): Promise<void> {
	await withClient("postgres", c => c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`));
}

export async function databaseExists(name: string): Promise<boolean> {
	const rows = await withClient("postgres", c => c.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]));
	return rows.rowCount === 1;
}

/** One query on `database`, on its own connection (what the database holds, not what a service says). */
export async function pgQuery<R extends QueryResultRow = QueryResultRow>(database: string, sql: string, params: unknown[] = []): Promise<R[]> {
	return withClient(database, async c => (await c.query<R>(sql, params)).rows);
}

/**
 * The databases of one suite, one per service: `create()` in beforeAll, `drop()` in afterAll
 * (drop also runs after a failed create, and removes whatever was created).
 */
export class TestDatabases<S extends string> {
	readonly names: Record<S, string>;
	private created: string[] = [];

	constructor(services: readonly S[]) {
		this.names = Object.fromEntries(services.map(s => [s, uniqueDbName(s)])) as Record<S, string>;
	}

	get urls(): Record<S, string> {
		return Object.fromEntries(Object.entries(this.names).map(([s, n]) => [s, pgUrl(n as string)])) as Record<S, string>;
	}

	async create(): Promise<this> {
		for (const name of Object.values(this.names) as string[]) {
			await createDatabase(name);
			this.created.push(name);
		}
		return this;
	}

	async drop(): Promise<void> {
		const names = this.created;
		this.created = [];
		await Promise.all(names.map(dropDatabase));
	}
}
