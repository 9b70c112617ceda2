/**
 * lib/sql.ts on PostgreSQL: a statement with parameters is a named prepared statement, parsed
 * once per connection (the server's pg_prepared_statements shows it), and whatever fails —
 * a statement the server cannot parse, a run that breaks a constraint, a transaction rolled back —
 * leaves the connection able to run it, and every other, again.
 */
import type { Sequelize, Transaction } from "sequelize";
import { createSequelize } from "../../mixins/db.mixin";
import { runSql, runTransaction } from "../../lib/sql";
import { TestDatabases } from "../support/pg";
import { requireServers } from "../support/servers";

const dbs = new TestDatabases(["sql"] as const);
let db: Sequelize;
let serversUp = false;

beforeAll(async () => {
	await requireServers("postgres");
	serversUp = true;
	await dbs.create();
	// One connection: every statement below runs on the same server session.
	db = createSequelize(dbs.urls.sql, 1);
	await runSql(db, "CREATE TABLE things (id varchar(36) PRIMARY KEY, n integer NOT NULL CHECK (n >= 0))", []);
});

afterAll(async () => {
	if (!serversUp) return; // nothing was created
	await db?.close();
	await dbs.drop();
});

/** The session's prepared statements, by text (what runs on the one connection). */
async function prepared(t?: Transaction): Promise<string[]> {
	return (await runSql<{ statement: string }>(db, "SELECT statement FROM pg_prepared_statements ORDER BY statement", [], t)).rows.map(r => r.statement);
}

describe("prepared statements (PostgreSQL)", () => {
	const insert = "INSERT INTO things (id, n) VALUES ($1, $2) RETURNING id, n";

	it("prepares a statement with parameters once per connection and runs it bound afresh", async () => {
		expect((await runSql(db, insert, ["a", 1])).rows).toEqual([{ id: "a", n: 1 }]);
		expect((await runSql(db, insert, ["b", 2])).rows).toEqual([{ id: "b", n: 2 }]);
		const statements = await prepared();
		expect(statements.filter(s => s === insert)).toHaveLength(1);
		// No parameters: the simple protocol, nothing kept on the server.
		expect(statements).not.toContain("SELECT statement FROM pg_prepared_statements ORDER BY statement");
	});

	it("runs a prepared statement again after a run of it broke a constraint", async () => {
		const err = await runSql(db, insert, ["a", 3]).catch((e: Error) => e);
		expect(err).toBeInstanceOf(Error);
		expect((err as Error).name).toBe("SequelizeUniqueConstraintError");
		expect((await runSql(db, insert, ["c", 3])).rows).toEqual([{ id: "c", n: 3 }]);
	});

	it("answers a statement the server cannot parse with its error, each time, and runs the next", async () => {
		const bad = "SELECT id FROM no_such_table WHERE id = $1";
		for (let i = 0; i < 2; i++) await expect(runSql(db, bad, ["a"])).rejects.toThrow(/no_such_table/);
		expect(await prepared()).not.toContain(bad);
		expect((await runSql(db, "SELECT n FROM things WHERE id = $1", ["b"])).rows).toEqual([{ n: 2 }]);
	});

	it("keeps a statement prepared inside a transaction that rolled back, and runs it after", async () => {
		const update = "UPDATE things SET n = n - $2 WHERE id = $1 RETURNING n";
		await expect(
			runTransaction(db, async t => {
				await runSql(db, update, ["c", 1], t);
				await runSql(db, update, ["c", 5], t); // n would go below 0: the CHECK fails, the transaction rolls back
			}),
		).rejects.toThrow(/check constraint/);
		expect((await runSql(db, "SELECT n FROM things WHERE id = $1", ["c"])).rows).toEqual([{ n: 3 }]);
		expect((await runSql(db, update, ["c", 1])).rows).toEqual([{ n: 2 }]);
		expect((await prepared()).filter(s => s === update)).toHaveLength(1);
	});

	it("runs texts past the ones it names unnamed, keeping a bounded number on the connection", async () => {
		const texts = Array.from({ length: 150 }, (_, i) => `SELECT n + ${i} AS m FROM things WHERE id = $1`);
		for (const [i, text] of texts.entries()) expect((await runSql(db, text, ["a"])).rows).toEqual([{ m: 1 + i }]);
		for (const [i, text] of texts.entries()) expect((await runSql(db, text, ["b"])).rows).toEqual([{ m: 2 + i }]);
		const kept = await prepared();
		expect(kept.length).toBeLessThanOrEqual(100);
		expect(kept.length).toBeGreaterThan(50);
	});
});
