/**
 * lib/sql.ts on SQLite: what a statement on the driver's connection must keep from Sequelize's way
 * (the errors it throws, the text it stores for a time). PostgreSQL takes `$n` and Dates natively.
 */
import { DataTypes, UniqueConstraintError, type Sequelize } from "sequelize";
import sqlite3 from "sqlite3";
import { createSequelize, isConnectionError } from "../../mixins/db.mixin";
import { runSql, runTransaction } from "../../lib/sql";
import { tempDir } from "../support/broker";

let tmp: ReturnType<typeof tempDir>;
let db: Sequelize;

beforeAll(async () => {
	tmp = tempDir();
	db = createSequelize(`sqlite:${tmp.dir}/sql.sqlite`);
	db.define("thing", { id: { type: DataTypes.STRING, primaryKey: true }, n: DataTypes.INTEGER, at: DataTypes.DATE }, { tableName: "things", timestamps: false });
	await db.sync();
});
afterAll(async () => {
	await db.close();
	tmp.remove();
});

it("binds $n placeholders by number, however often and in whatever order they appear", async () => {
	await runSql(db, "INSERT INTO things (id, n) VALUES ($2, $1)", [7, "a"]);
	const { rows, count } = await runSql<{ id: string; n: number }>(db, "SELECT id, n FROM things WHERE n = $1 OR n = $1 + 0", [7]);
	expect(rows).toEqual([{ id: "a", n: 7 }]);
	expect(count).toBe(1);
	expect((await runSql(db, "UPDATE things SET n = n + $1 WHERE id = $2", [1, "a"])).count).toBe(1);
	expect((await runSql(db, "UPDATE things SET n = 0 WHERE id = $1 RETURNING n", ["a"])).rows).toEqual([{ n: 0 }]);
});

it("stores a time as Sequelize does, so either one's rows compare and read back alike", async () => {
	const at = new Date("2026-11-26T10:11:12.345Z");
	await db.model("thing").create({ id: "model", at });
	await runSql(db, "INSERT INTO things (id, at) VALUES ($1, $2)", ["raw", at]);
	const { rows } = await runSql<{ id: string; at: string }>(db, "SELECT id, at FROM things WHERE id IN ('model', 'raw') ORDER BY id", []);
	expect(rows[0].at).toBe(rows[1].at);
	expect(new Date(rows[1].at).toISOString()).toBe(at.toISOString());
	expect((await runSql(db, "SELECT id FROM things WHERE at < $1", [new Date(at.getTime() + 1)])).count).toBe(2);
});

it("throws Sequelize's UniqueConstraintError for a duplicate key, and no connection error", async () => {
	await runSql(db, "INSERT INTO things (id) VALUES ($1)", ["dup"]);
	const err = await runSql(db, "INSERT INTO things (id) VALUES ($1)", ["dup"]).catch((e: Error) => e);
	expect(err).toBeInstanceOf(UniqueConstraintError);
	expect(isConnectionError(err)).toBe(false);
});

describe("runTransaction", () => {
	const ids = async () => (await runSql<{ id: string }>(db, "SELECT id FROM things WHERE id LIKE 'tx-%' ORDER BY id", [])).rows.map(r => r.id);

	it("commits the statements and the model calls made with its transaction together", async () => {
		await runTransaction(db, async t => {
			await runSql(db, "INSERT INTO things (id) VALUES ($1)", ["tx-a"], t);
			await db.model("thing").create({ id: "tx-b" }, { transaction: t });
		});
		expect(await ids()).toEqual(["tx-a", "tx-b"]);
	});

	it("rolls every one back when the work throws, and answers the error", async () => {
		const err = await runTransaction(db, async t => {
			await runSql(db, "INSERT INTO things (id) VALUES ($1)", ["tx-c"], t);
			await db.model("thing").create({ id: "tx-d" }, { transaction: t });
			await runSql(db, "INSERT INTO things (id) VALUES ($1)", ["tx-a"], t);
		}).catch((e: Error) => e);
		expect(err).toBeInstanceOf(UniqueConstraintError);
		expect(await ids()).toEqual(["tx-a", "tx-b"]);
	});

	it("refuses a statement on a transaction that has ended", async () => {
		let done: import("sequelize").Transaction | undefined;
		await runTransaction(db, async t => {
			done = t;
		});
		await expect(db.model("thing").create({ id: "tx-late" }, { transaction: done })).rejects.toThrow(/commit has been called/);
		await expect(runSql(db, "INSERT INTO things (id) VALUES ($1)", ["tx-late"], done)).rejects.toThrow(/commit has been called/);
		expect(await ids()).toEqual(["tx-a", "tx-b"]);
	});

	it("runs t.afterCommit hooks once the COMMIT succeeded, outside the write queue, and never after a rollback", async () => {
		const seen: string[] = [];
		await runTransaction(db, async t => {
			await runSql(db, "INSERT INTO things (id) VALUES ($1)", ["tx-hook"], t);
			// A hook that writes would wait forever for a queue turn its own transaction holds.
			t.afterCommit(async () => {
				await runSql(db, "INSERT INTO things (id) VALUES ($1)", ["tx-after"]);
				seen.push("committed");
			});
			expect(seen).toEqual([]);
		});
		expect(seen).toEqual(["committed"]);
		await runTransaction(db, async t => {
			t.afterCommit(() => void seen.push("rolled back"));
			throw new Error("no");
		}).catch(() => undefined);
		expect(seen).toEqual(["committed"]);
		expect(await ids()).toEqual(["tx-a", "tx-after", "tx-b", "tx-hook"]);
	});
});

describe("prepared statements (SQLite)", () => {
	afterEach(() => jest.restoreAllMocks());

	it("prepares a statement once per connection and runs it again bound afresh", async () => {
		const prepare = jest.spyOn(sqlite3.Database.prototype, "prepare");
		await runSql(db, "INSERT INTO things (id, n) VALUES ($1, $2)", ["p-1", 1]);
		await runSql(db, "INSERT INTO things (id, n) VALUES ($1, $2)", ["p-2", 2]);
		const text = "SELECT id FROM things WHERE id LIKE 'p-%' AND n >= $1 ORDER BY id";
		expect((await runSql<{ id: string }>(db, text, [1])).rows.map(r => r.id)).toEqual(["p-1", "p-2"]);
		expect((await runSql<{ id: string }>(db, text, [2])).rows.map(r => r.id)).toEqual(["p-2"]);
		expect((await runSql<{ id: string }>(db, text, [3])).rows).toEqual([]);
		const texts = prepare.mock.calls.map(c => c[0]);
		expect(texts.filter(t => t.startsWith("INSERT INTO things (id, n)"))).toHaveLength(1);
		expect(texts.filter(t => t.startsWith("SELECT id FROM things WHERE id LIKE 'p-%'"))).toHaveLength(1);
	});

	it("answers a statement that cannot be prepared with SQLite's error, and prepares it again once it can", async () => {
		const text = "SELECT id FROM later_things WHERE id = $1";
		const calls = [runSql(db, text, ["a"]), runSql(db, text, ["b"])];
		for (const call of calls) await expect(call).rejects.toThrow(/no such table: later_things/);
		await runSql(db, "CREATE TABLE later_things (id TEXT PRIMARY KEY)", []);
		await runSql(db, "INSERT INTO later_things (id) VALUES ($1)", ["a"]);
		expect((await runSql(db, text, ["a"])).rows).toEqual([{ id: "a" }]);
	});

	it("runs a statement again after a run of it failed", async () => {
		const text = "INSERT INTO things (id, n) VALUES ($1, $2)";
		await runSql(db, text, ["again-1", 1]);
		await expect(runSql(db, text, ["again-1", 2])).rejects.toBeInstanceOf(UniqueConstraintError);
		await runSql(db, text, ["again-2", 3]);
		const { rows } = await runSql<{ id: string; n: number }>(db, "SELECT id, n FROM things WHERE id LIKE 'again-%' ORDER BY id", []);
		expect(rows).toEqual([
			{ id: "again-1", n: 1 },
			{ id: "again-2", n: 3 },
		]);
	});

	it("runs a statement that reads without starting with SELECT to its end, answering its rows", async () => {
		await runSql(db, "INSERT INTO things (id, n) VALUES ($1, $2)", ["with-1", 41]);
		const text = "WITH found AS (SELECT n FROM things WHERE id = $1) SELECT n + 1 AS n FROM found";
		expect((await runSql(db, text, ["with-1"])).rows).toEqual([{ n: 42 }]);
		expect((await runSql(db, "PRAGMA foreign_keys", [])).rows).toEqual([{ foreign_keys: 1 }]);
	});

	it("keeps a bounded number of statements a connection, finalizing the oldest after its queued calls", async () => {
		const other = createSequelize(`sqlite:${tmp.dir}/bounded.sqlite`);
		const prepare = jest.spyOn(sqlite3.Database.prototype, "prepare");
		const first = "SELECT $1 + 0 AS n";
		expect((await runSql(other, first, [1])).rows).toEqual([{ n: 1 }]);
		for (let i = 1; i < 200; i++) expect((await runSql(other, `SELECT $1 + ${i} AS n`, [0])).rows).toEqual([{ n: i }]);
		// The 200th other text pushes the first out while a call of it is queued on it.
		const [queued, last] = await Promise.all([runSql(other, first, [2]), runSql(other, "SELECT $1 + 200 AS n", [0])]);
		expect(queued.rows).toEqual([{ n: 2 }]);
		expect(last.rows).toEqual([{ n: 200 }]);
		expect((await runSql(other, first, [3])).rows).toEqual([{ n: 3 }]);
		expect(prepare.mock.calls.filter(c => c[0] === "SELECT ?1 + 0 AS n")).toHaveLength(2);
		await other.close();
	});

	it("closes connections that hold prepared statements", async () => {
		const other = createSequelize(`sqlite:${tmp.dir}/close.sqlite`);
		await runSql(other, "CREATE TABLE t (id INTEGER PRIMARY KEY)", []);
		await runTransaction(other, t => runSql(other, "INSERT INTO t (id) VALUES ($1)", [1], t));
		expect((await runSql(other, "SELECT id FROM t WHERE id = $1", [1])).rows).toEqual([{ id: 1 }]);
		const connections = Object.values((other.connectionManager as unknown as { connections: Record<string, { open: boolean }> }).connections);
		expect(connections).toHaveLength(2);
		await other.close();
		expect(connections.map(c => c.open)).toEqual([false, false]);
	});
});

describe("the SQLite write queue", () => {
	it("gives a write outside a transaction its turn among a stream of queued transactions", async () => {
		await runSql(db, "INSERT INTO things (id, n) VALUES ($1, 0)", ["q-counter"]);
		const done: string[] = [];
		// Each transaction holds the write lock across a few turns of the event loop, as an order's does.
		const transaction = (i: number) =>
			runTransaction(db, async t => {
				await runSql(db, "UPDATE things SET n = n + 1 WHERE id = $1", ["q-counter"], t);
				await new Promise(r => setTimeout(r, 2));
				await runSql(db, "UPDATE things SET n = n + 1 WHERE id = $1", ["q-counter"], t);
			}).then(() => done.push(`tx-${i}`));
		const first = Array.from({ length: 20 }, (_, i) => transaction(i));
		// Arrives after 20 transactions and before 20 more: it must not wait for those, nor fail.
		const write = runSql(db, "UPDATE things SET n = -1 WHERE id = $1", ["q-counter"]).then(() => done.push("write"));
		const later = Array.from({ length: 20 }, (_, i) => transaction(20 + i));
		await Promise.all([...first, write, ...later]);
		// Answered no later than those that came after it (it may share their commit).
		expect(done.indexOf("write")).toBeLessThan(done.indexOf("tx-39"));
		// Set between the two groups: only the 20 later transactions added to it afterwards.
		const { rows } = await runSql<{ n: number }>(db, "SELECT n FROM things WHERE id = $1", ["q-counter"]);
		expect(rows[0].n).toBe(-1 + 20 * 2);
	});
});

describe("group commit (SQLite)", () => {
	/** COMMITs sent from now on, counted at the prepared statement that runs them. */
	function countCommits(): { count(): number; stop(): void } {
		const proto = sqlite3.Statement.prototype as unknown as { run: (...a: unknown[]) => unknown; sql?: string };
		const run = proto.run;
		let commits = 0;
		proto.run = function (this: { sql?: string }, ...a: unknown[]) {
			if (this.sql === "COMMIT") commits++;
			return run.apply(this, a);
		};
		return { count: () => commits, stop: () => void (proto.run = run) };
	}

	/** A transaction that holds the queue until `open()`: what is queued meanwhile waits together. */
	function holdQueue(): { open(): void; done: Promise<unknown> } {
		let open!: () => void;
		const gate = new Promise<void>(r => (open = r));
		const done = runTransaction(db, async t => {
			await runSql(db, "INSERT INTO things (id) VALUES ($1)", [`gate-${Math.random()}`], t);
			await gate;
		});
		return { open, done };
	}

	const have = async (prefix: string) =>
		(await runSql<{ id: string }>(db, "SELECT id FROM things WHERE id LIKE $1 ORDER BY id", [`${prefix}%`])).rows.map(r => r.id);

	it("commits the writes that waited together once, answering each after the commit", async () => {
		const commits = countCommits();
		try {
			const gate = holdQueue();
			// How many COMMITs had run when each write was answered.
			const answered: number[] = [];
			const writes = [
				runTransaction(db, async t => void (await runSql(db, "INSERT INTO things (id) VALUES ($1)", ["g1-a"], t))),
				runSql(db, "INSERT INTO things (id) VALUES ($1)", ["g1-b"]),
				runTransaction(db, async t => {
					await runSql(db, "INSERT INTO things (id) VALUES ($1)", ["g1-c"], t);
					await db.model("thing").create({ id: "g1-d" }, { transaction: t });
				}),
				runSql(db, "INSERT INTO things (id) VALUES ($1)", ["g1-e"]),
			].map(p => p.then(() => answered.push(commits.count())));
			gate.open();
			await Promise.all([gate.done, ...writes]);
			expect(answered).toEqual([2, 2, 2, 2]);
			expect(await have("g1-")).toEqual(["g1-a", "g1-b", "g1-c", "g1-d", "g1-e"]);
			// The gate's own, then one for the four.
			expect(commits.count()).toBe(2);
		} finally {
			commits.stop();
		}
	});

	it("rolls back a transaction that throws, and only its own changes, answering it with its error", async () => {
		const gate = holdQueue();
		const a = runTransaction(db, async t => void (await runSql(db, "INSERT INTO things (id) VALUES ($1)", ["g2-a"], t)));
		const b = runTransaction(db, async t => {
			await runSql(db, "INSERT INTO things (id) VALUES ($1)", ["g2-b"], t);
			throw new Error("b changed its mind");
		});
		const c = runSql(db, "INSERT INTO things (id) VALUES ($1)", ["g2-c"]);
		gate.open();
		await gate.done;
		await expect(a).resolves.toBeUndefined();
		await expect(b).rejects.toThrow("b changed its mind");
		await expect(c).resolves.toMatchObject({ count: 1 });
		expect(await have("g2-")).toEqual(["g2-a", "g2-c"]);
	});

	it("fails a statement that breaks a constraint, or names no table, alone", async () => {
		await runSql(db, "INSERT INTO things (id) VALUES ($1)", ["g3-taken"]);
		const gate = holdQueue();
		const dup = runSql(db, "INSERT INTO things (id) VALUES ($1)", ["g3-taken"]);
		const nowhere = runSql(db, "INSERT INTO no_such_things (id) VALUES ($1)", ["g3-x"]);
		const other = runSql(db, "INSERT INTO things (id) VALUES ($1)", ["g3-new"]);
		const after = runTransaction(db, async t => void (await runSql(db, "INSERT INTO things (id) VALUES ($1)", ["g3-tx"], t)));
		gate.open();
		await gate.done;
		await expect(dup).rejects.toBeInstanceOf(UniqueConstraintError);
		await expect(nowhere).rejects.toThrow(/no such table/);
		await expect(other).resolves.toMatchObject({ count: 1 });
		await expect(after).resolves.toBeUndefined();
		expect(await have("g3-")).toEqual(["g3-new", "g3-taken", "g3-tx"]);
	});

	it("answers every write run in a transaction that ended under it with an error, and runs the rest again", async () => {
		const gate = holdQueue();
		const a = runTransaction(db, async t => void (await runSql(db, "INSERT INTO things (id) VALUES ($1)", ["g4-a"], t)));
		// Ends the group's transaction from inside: a's insert goes with it, and b's savepoint too.
		const b = runTransaction(db, async t => {
			await runSql(db, "ROLLBACK", [], t);
			throw new Error("b ended it");
		});
		const c = runTransaction(db, async t => void (await runSql(db, "INSERT INTO things (id) VALUES ($1)", ["g4-c"], t)));
		gate.open();
		await gate.done;
		await expect(a).rejects.toThrow(/savepoint|transaction/i);
		await expect(b).rejects.toThrow("b ended it");
		await expect(c).resolves.toBeUndefined();
		expect(await have("g4-")).toEqual(["g4-c"]);
		// The queue goes on, on a fresh connection.
		await runTransaction(db, async t => void (await runSql(db, "INSERT INTO things (id) VALUES ($1)", ["g4-d"], t)));
		expect(await have("g4-")).toEqual(["g4-c", "g4-d"]);
	});
});
