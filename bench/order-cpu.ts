/**
 * CPU per order in one process, no HTTP: users, products, orders and notifications on SQLite files
 * in a temp dir (the embedded default), or with DB=pg on fresh PostgreSQL databases (dropped
 * afterwards), `orders.create` called N times, C at a time. Prints the CPU milliseconds and the SQL
 * statements per order up to the commit, then until every order's notification is stored. The
 * HTTP bench (`npm run bench -- --scenarios order`) says how fast; this says where to look, and
 * runs under `node --cpu-prof -r ts-node/register/transpile-only` for a profile (the TypeScript
 * compile shows at start-up; read the hot path below it).
 *
 *   N=200 C=1 npx ts-node --transpile-only bench/order-cpu.ts
 *   DB=pg N=300 C=10 npx ts-node --transpile-only bench/order-cpu.ts
 *   STATEMENTS=1 N=300 C=10 npx ts-node --transpile-only bench/order-cpu.ts   # and which statements, by text
 */
import { Client } from "pg";
import sqlite3 from "sqlite3";
import { createNode, tempDir } from "../test/support/broker";
import { createDatabase, dropDatabase, pgUrl, uniqueDbName } from "../test/support/pg";
import { waitFor } from "../test/support/wait";

const SERVICES = ["users", "products", "orders", "notifications"];

/** Counts the statements sent by both drivers (every Sequelize query ends in one of these). */
function countStatements(): { count: number; texts: Map<string, number> } {
	const counter = { count: 0, texts: new Map<string, number>() };
	const wrap = (proto: Record<string, unknown>, name: string) => {
		const original = proto[name] as (...a: unknown[]) => unknown;
		proto[name] = function (this: { sql?: string }, ...args: unknown[]) {
			counter.count++;
			if (process.env.STATEMENTS) {
				const text = String(this.sql ?? (typeof args[0] === "string" ? args[0] : (args[0] as { text?: string })?.text)).replace(/\s+/g, " ").slice(0, 110);
				counter.texts.set(text, (counter.texts.get(text) ?? 0) + 1);
			}
			return original.apply(this, args);
		};
	};
	wrap(Client.prototype as unknown as Record<string, unknown>, "query");
	// Database#all/run/get go through a Statement of their own; lib/sql runs its prepared ones.
	for (const m of ["all", "run", "get", "each"]) wrap(sqlite3.Statement.prototype as unknown as Record<string, unknown>, m);
	wrap(sqlite3.Database.prototype as unknown as Record<string, unknown>, "exec");
	return counter;
}

async function databases(): Promise<{ urls: Record<string, string>; remove(): Promise<void> }> {
	if (process.env.DB === "pg") {
		const names = Object.fromEntries(SERVICES.map(s => [s, uniqueDbName(s)]));
		for (const name of Object.values(names)) await createDatabase(name);
		return {
			urls: Object.fromEntries(SERVICES.map(s => [s, pgUrl(names[s])])),
			remove: async () => {
				for (const name of Object.values(names)) await dropDatabase(name);
			},
		};
	}
	const dir = tempDir();
	return { urls: Object.fromEntries(SERVICES.map(s => [s, `sqlite:${dir.dir}/${s}.sqlite`])), remove: async () => dir.remove() };
}

async function main(): Promise<void> {
	const dbs = await databases();
	const statements = countStatements();
	const b = createNode({ services: SERVICES, databaseUrls: dbs.urls, cacher: "Memory", broker: { logger: { type: "Console", options: { level: "error" } } } });
	await b.start();
	try {
		const reg = await b.call<{ user: { id: number } }, object>("users.register", { email: "cpu@example.com", password: "password-123", name: "CPU" });
		const meta = { user: { id: reg.user.id, role: "customer" } };
		const ids: number[] = [];
		for (let i = 0; i < 100; i++) ids.push((await b.call<{ id: number }, object>("products.create", { sku: `CPU-${i}`, name: "Cezve", category: "copper", priceCents: 100, stock: 1_000_000 })).id);
		const n = Number(process.env.N ?? 200);
		const c = Number(process.env.C ?? 1);
		await waitFor("the registration's notification", async () => (await b.call<{ total: number }, object>("notifications.list", { pageSize: 1 }, { meta })).total >= 1, 30_000, 100);
		const s0 = statements.count;
		statements.texts.clear();
		const cpu0 = process.cpuUsage();
		const t0 = Date.now();
		for (let i = 0; i < n; i += c)
			await Promise.all(
				Array.from({ length: c }, (_, j) =>
					b.call("orders.create", { items: [{ productId: ids[(i + j) % ids.length], quantity: 1 }] }, { meta: { ...meta, idempotencyKey: `cpu-${i + j}` } }),
				),
			);
		const cpu1 = process.cpuUsage(cpu0);
		const s1 = statements.count;
		console.log(
			`${process.env.DB === "pg" ? "PostgreSQL" : "SQLite"} C=${c}: ${n} orders in ${Date.now() - t0} ms, ${((cpu1.user + cpu1.system) / n / 1000).toFixed(2)} ms CPU and ${((s1 - s0) / n).toFixed(1)} statements per order up to its commit`,
		);
		// STATEMENTS=1: which statements, and how many of each an order (up to its commit).
		if (process.env.STATEMENTS)
			for (const [text, count] of [...statements.texts].sort((a, b) => b[1] - a[1]).filter(([, count]) => count >= n / 10))
				console.log(`  ${(count / n).toFixed(2)}  ${text}`);
		const cpu2 = process.cpuUsage();
		await waitFor("every order's notification", async () => (await b.call<{ total: number }, object>("notifications.list", { pageSize: 1 }, { meta })).total >= n + 1, 120_000, 200);
		const cpu3 = process.cpuUsage(cpu2);
		console.log(
			`then ${((cpu3.user + cpu3.system) / n / 1000).toFixed(2)} ms CPU per order until all are notified; ${((statements.count - s0) / n).toFixed(1)} statements per order in all (the list polls included)`,
		);
	} finally {
		await b.stop();
		await dbs.remove();
	}
}

main().catch(err => {
	console.error(err);
	process.exit(1);
});
