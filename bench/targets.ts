/**
 * What the bench measures, each started by the bench itself on loopback and removed afterwards:
 * the bare baselines (bench/baselines) and our code in its three shapes (embedded, one process on
 * PostgreSQL, the distributed cluster on each transporter). Every database, Redis key, queue and
 * exchange of a run carries the run's namespace.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import amqp from "amqplib";
import { Client } from "pg";
import sqlite3 from "sqlite3";
import { DATABASE_SERVICES } from "../lib/config";
import { startProcess, type NodeProcess } from "../test/support/processes";
import { createDatabase, dropDatabase, pgUrl } from "../test/support/pg";
import { deleteKeysWithPrefix } from "../test/support/redis";
import { SERVERS } from "../test/support/servers";
import { freePort, isAlive, processTree, product } from "./common";

const ROOT = path.resolve(__dirname, "..");
/** Longer than a whole run: a hit ratio under 1 then means invalidation, never expiry. */
export const BENCH_CACHE_TTL = "3600";
/**
 * Each service's PostgreSQL pool (the default is 10). The main phase holds base-pg (two pools of
 * 10), pg-nocache and the cluster (four services each) at once, and their pools stay open for 10 s
 * after use: at 10 a warmed-up run reached PostgreSQL's 100 connections ("sorry, too many clients
 * already"); at 8 the three stay under 90.
 */
const BENCH_DB_POOL_MAX = "8";
export const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);

/**
 * The environment of our processes under the bench (every target of ours and bench/ab.ts); a
 * `dataDir` for the SQLite files of the embedded default.
 */
export function benchEnv(o: { dataDir?: string; port: number; namespace: string }): Record<string, string> {
	return {
		...(o.dataDir ? { DATA_DIR: o.dataDir } : {}),
		PORT: String(o.port),
		LOG_LEVEL: "warn",
		NAMESPACE: o.namespace,
		ADMIN_PASSWORD: "bench-admin-password",
		CACHE_TTL: BENCH_CACHE_TTL,
		DB_POOL_MAX: BENCH_DB_POOL_MAX,
	};
}

/** GETs every product once, `connections` at a time: fills the cache and checks the seed (each must answer 200). */
export async function sweep(t: { name: string; port: number }, n: number, connections: number): Promise<void> {
	const t0 = Date.now();
	let next = 1;
	let bad = 0;
	await Promise.all(
		Array.from({ length: connections }, async () => {
			while (next <= n) {
				const res = await fetch(`http://127.0.0.1:${t.port}/api/products/${next++}`);
				await res.arrayBuffer();
				if (res.status !== 200) bad++;
			}
		}),
	);
	if (bad > 0) throw new Error(`${t.name}: ${bad} of ${n} products did not answer 200 after seeding`);
	log(`${t.name}: read all ${n} products once in ${Date.now() - t0} ms`);
}

/** Where one service's rows are: a SQLite file or a PostgreSQL URL. */
export type Store = { kind: "sqlite"; file: string } | { kind: "pg"; url: string };

export interface Target {
	name: string;
	kind: "baseline" | "ours";
	describe: string;
	port: number;
	/** The root processes (CPU is counted over each one's tree). */
	pids(): number[];
	start(): Promise<void>;
	/** Products from..to (inclusive) straight into the products table. */
	seedProducts(from: number, to: number): Promise<void>;
	stop(): Promise<void>;
	cleanup(): Promise<void>;
	crashed(): string | undefined;
	/** Our targets: where a service keeps its rows (for seeding orders and checking notifications). */
	store?(service: string): Store;
}

export interface TargetOptions {
	run: string;
	ns: string;
	products: number;
	/** Extra environment for our processes (the --profile preload). */
	env: Record<string, string>;
}

// ---------------------------------------------------------------- processes
function childExit(proc: ChildProcess): Promise<void> {
	return new Promise(resolve => (proc.exitCode !== null || proc.signalCode !== null ? resolve() : proc.once("exit", () => resolve())));
}

async function stopTree(root: ChildProcess | undefined, graceMs: number): Promise<void> {
	if (!root?.pid) return;
	const pids = processTree(root.pid);
	if (root.exitCode === null && root.signalCode === null) root.kill("SIGTERM");
	await Promise.race([childExit(root), new Promise(r => setTimeout(r, graceMs))]);
	for (const pid of pids) if (isAlive(pid)) process.kill(pid, "SIGKILL");
}

export async function waitHttp(url: string, timeoutMs: number, crashed: () => string | undefined): Promise<void> {
	const deadline = Date.now() + timeoutMs;
	for (;;) {
		const why = crashed();
		if (why) throw new Error(why);
		const ok = await fetch(url, { signal: AbortSignal.timeout(2000) }).then(r => r.status === 200, () => false);
		if (ok) return;
		if (Date.now() > deadline) throw new Error(`${url} not ready within ${timeoutMs} ms`);
		await new Promise(r => setTimeout(r, 200));
	}
}

/** A TypeScript script in its own process (ts-node, transpile only) that prints "ready". */
class Script {
	proc?: ChildProcess;
	out = "";
	constructor(
		readonly label: string,
		readonly file: string,
	) {}
	crashed(): string | undefined {
		const p = this.proc;
		return p && (p.exitCode !== null || p.signalCode !== null) ? `${this.label} exited (${p.exitCode ?? p.signalCode}):\n${this.out.slice(-4000)}` : undefined;
	}
	async start(env: Record<string, string>): Promise<void> {
		this.proc = spawn(process.execPath, ["-r", "ts-node/register/transpile-only", this.file], {
			cwd: ROOT,
			env: { ...process.env, ...env },
			stdio: ["ignore", "pipe", "pipe"],
		});
		this.proc.stdout!.on("data", d => (this.out += d));
		this.proc.stderr!.on("data", d => (this.out += d));
		const deadline = Date.now() + 60_000;
		while (!this.out.includes("ready")) {
			const why = this.crashed();
			if (why) throw new Error(why);
			if (Date.now() > deadline) throw new Error(`${this.label} did not start:\n${this.out}`);
			await new Promise(r => setTimeout(r, 100));
		}
	}
}

// ---------------------------------------------------------------- seeding
function sqliteRun(db: sqlite3.Database, sql: string, params: unknown[] = []): Promise<void> {
	return new Promise((res, rej) => db.run(sql, params, err => (err ? rej(err) : res())));
}

function sqliteAll<R>(db: sqlite3.Database, sql: string, params: unknown[] = []): Promise<R[]> {
	return new Promise((res, rej) => db.all(sql, params, (err, rows) => (err ? rej(err) : res(rows as R[]))));
}

/** Rows of a query on a store, for checks after a scenario. */
export async function query<R = Record<string, unknown>>(store: Store, sql: string, params: unknown[] = []): Promise<R[]> {
	if (store.kind === "pg") {
		const c = new Client({ connectionString: store.url });
		await c.connect();
		try {
			return (await c.query(sql.replace(/\?/g, (_, i) => `$${sql.slice(0, i).split("?").length}`), params)).rows as R[];
		} finally {
			await c.end();
		}
	}
	const db = new sqlite3.Database(store.file);
	try {
		await sqliteRun(db, "PRAGMA busy_timeout = 5000");
		return await sqliteAll<R>(db, sql, params);
	} finally {
		await new Promise(r => db.close(r));
	}
}

/** Inserts rows in batches in one transaction: `columns` name the table's columns, `row` gives their values. */
export async function insertRows(store: Store, table: string, columns: string[], from: number, to: number, row: (i: number) => unknown[]): Promise<void> {
	const batch = store.kind === "pg" ? Math.floor(30_000 / columns.length) : Math.floor(900 / columns.length);
	const sql = (count: number) =>
		`INSERT INTO ${table} (${columns.join(", ")}) VALUES ` +
		Array.from({ length: count }, (_, r) => `(${columns.map((_, c) => (store.kind === "pg" ? `$${r * columns.length + c + 1}` : "?")).join(",")})`).join(",");
	const chunks = function* () {
		for (let i = from; i <= to; i += batch) {
			const rows: unknown[][] = [];
			for (let id = i; id < Math.min(i + batch, to + 1); id++) rows.push(row(id));
			yield rows;
		}
	};
	if (store.kind === "pg") {
		const c = new Client({ connectionString: store.url });
		await c.connect();
		try {
			await c.query("BEGIN");
			for (const rows of chunks()) await c.query(sql(rows.length), rows.flat());
			await c.query("COMMIT");
		} finally {
			await c.end();
		}
		return;
	}
	const db = new sqlite3.Database(store.file);
	try {
		await sqliteRun(db, "PRAGMA busy_timeout = 5000");
		await sqliteRun(db, "BEGIN");
		for (const rows of chunks()) await sqliteRun(db, sql(rows.length), rows.flat());
		await sqliteRun(db, "COMMIT");
	} finally {
		await new Promise(r => db.close(r));
	}
}

const PRODUCT_COLUMNS = ["id", "sku", "name", "description", "category", "price_cents", "currency", "stock", "created_at", "updated_at"];

export async function seedProducts(store: Store, from: number, to: number): Promise<void> {
	// Spread creation times so that sorting by createdAt has work to do; SQLite rows in the text
	// form Sequelize writes there.
	const at = (i: number) => {
		const iso = new Date(Date.parse("2026-01-01T00:00:00Z") + i * 1000).toISOString();
		return store.kind === "pg" ? iso : iso.replace("T", " ").replace("Z", " +00:00");
	};
	await insertRows(store, "products", PRODUCT_COLUMNS, from, to, i => {
		const p = product(i);
		return [p.id, p.sku, p.name, p.description, p.category, p.priceCents, p.currency, p.stock, at(i), at(i)];
	});
	if (store.kind === "pg") await query(store, "SELECT setval(pg_get_serial_sequence('products', 'id'), (SELECT max(id) FROM products))");
}

// ---------------------------------------------------------------- baselines
function baseline(name: string, describe: string, scripts: Array<{ script: Script; env: Record<string, string> }>, extra: { seed?: Target["seedProducts"]; cleanup: () => Promise<void> }): Target {
	const t: Target = {
		name,
		kind: "baseline",
		describe,
		port: 0,
		pids: () => scripts.map(s => s.script.proc?.pid).filter((p): p is number => p !== undefined),
		crashed: () => scripts.map(s => s.script.crashed()).find(Boolean),
		async start() {
			t.port = await freePort();
			// In the order given: a gateway comes after the service it waits for.
			for (const s of scripts) await s.script.start({ ...s.env, PORT: String(t.port), REDIS_URL: SERVERS.redis });
		},
		seedProducts: extra.seed ?? (async () => undefined),
		async stop() {
			for (const s of [...scripts].reverse()) await stopTree(s.script.proc, 5000);
		},
		cleanup: extra.cleanup,
	};
	return t;
}

export function baseNodeRedis(o: TargetOptions, profileEnv: Record<string, string>): Target {
	const prefix = `carsi-${o.ns}_base-`;
	return baseline("base-node-redis", "bare node:http + one ioredis GET", [{ script: new Script("base-node-redis", path.join(__dirname, "baselines/node-redis.ts")), env: { ...profileEnv, BENCH_PREFIX: prefix, BENCH_PRODUCTS: String(o.products) } }], {
		cleanup: async () => void (await deleteKeysWithPrefix(prefix)),
	});
}

export function baseMwRedis(o: TargetOptions, profileEnv: Record<string, string>): Target {
	const ns = `${o.ns}_mw`;
	return baseline("base-mw-redis", "bare moleculer-web route → bare action, Redis cacher, one process", [{ script: new Script("base-mw-redis", path.join(__dirname, "baselines/moleculer-web-redis.ts")), env: { ...profileEnv, NAMESPACE: ns } }], {
		cleanup: async () => void (await deleteKeysWithPrefix(`carsi-${ns}-`)),
	});
}

export function baseAmqp(o: TargetOptions, profileEnv: Record<string, string>): Target {
	const ns = `${o.ns}_mwamqp`;
	const file = path.join(__dirname, "baselines/moleculer-web-redis.ts");
	const env = { ...profileEnv, NAMESPACE: ns, TRANSPORTER: SERVERS.rabbitmq };
	return baseline(
		"base-amqp",
		"the same bare route and action in two processes over the AMQP transporter (tuned as ours)",
		[
			{ script: new Script("base-amqp products", file), env: { ...env, ROLE: "products" } },
			{ script: new Script("base-amqp gateway", file), env: { ...env, ROLE: "gateway" } },
		],
		{
			cleanup: async () => {
				await deleteKeysWithPrefix(`carsi-${ns}-`);
				await deleteAmqpOf(ns, o.run);
			},
		},
	);
}

export function basePg(o: TargetOptions, profileEnv: Record<string, string>): Target {
	const db = (s: string) => `carsi_${o.ns}_basepg_${s}`;
	const script = new Script("base-pg", path.join(__dirname, "baselines/node-pg.ts"));
	const t = baseline("base-pg", "bare node:http + pg: SELECT by primary key; the SQL of one order in its transactions", [{ script, env: { ...profileEnv, PRODUCTS_URL: pgUrl(db("products")), ORDERS_URL: pgUrl(db("orders")), BENCH_PRODUCTS: String(o.products) } }], {
		cleanup: async () => {
			await dropDatabase(db("products"));
			await dropDatabase(db("orders"));
		},
	});
	const start = t.start;
	t.start = async () => {
		await createDatabase(db("products"));
		await createDatabase(db("orders"));
		await start();
	};
	return t;
}

// ---------------------------------------------------------------- ours
export interface OursOptions {
	name: string;
	describe: string;
	/** "memory" (the default), "redis", or "off". */
	cache: "memory" | "redis" | "off";
	/** SQLite files in a temp DATA_DIR, or a PostgreSQL database per service. */
	db: "sqlite" | "pg";
	/** More environment (e.g. TRACING=off for what tracing costs). */
	env?: Record<string, string>;
}

/** Every service in one moleculer-runner: the embedded default, or the same on PostgreSQL. */
export function oneProcess(o: TargetOptions, opts: OursOptions): Target {
	let node: NodeProcess | undefined;
	let dataDir = "";
	const ns = `${o.ns}_${opts.name.replace(/-/g, "_")}`;
	const dbName = (s: string) => `carsi_${ns}_${s}`;
	const t: Target = {
		name: opts.name,
		kind: "ours",
		describe: opts.describe,
		port: 0,
		pids: () => (node?.proc.pid ? [node.proc.pid] : []),
		crashed: () => (node && (node.proc.exitCode !== null || node.proc.signalCode !== null) ? `${opts.name} exited (${node.proc.exitCode ?? node.proc.signalCode}):\n${node.output().slice(-4000)}` : undefined),
		store: service => (opts.db === "pg" ? { kind: "pg", url: pgUrl(dbName(service)) } : { kind: "sqlite", file: path.join(dataDir, `${service}.sqlite`) }),
		async start() {
			t.port = await freePort();
			dataDir = fs.mkdtempSync(path.join(os.tmpdir(), `carsi-bench-${opts.name}-`));
			const env: Record<string, string> = { ...benchEnv({ dataDir, port: t.port, namespace: ns }), ...opts.env, ...o.env };
			if (opts.cache === "redis") env.CACHER = SERVERS.redis;
			if (opts.cache === "off") env.CACHER = "off";
			if (opts.db === "pg")
				for (const s of DATABASE_SERVICES) {
					await createDatabase(dbName(s));
					env[`${s.toUpperCase()}_DATABASE_URL`] = pgUrl(dbName(s));
				}
			node = startProcess(opts.name, env);
			await waitHttp(`http://127.0.0.1:${t.port}/ready`, 60_000, t.crashed);
		},
		seedProducts: (from, to) => seedProducts(t.store!("products"), from, to),
		async stop() {
			if (node) await Promise.race([node.stop(), new Promise(r => setTimeout(r, 10_000))]);
			if (node?.proc.pid && isAlive(node.proc.pid)) node.proc.kill("SIGKILL");
		},
		async cleanup() {
			if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
			if (opts.cache === "redis") await deleteKeysWithPrefix(`carsi-${ns}-`);
			if (opts.db === "pg") for (const s of DATABASE_SERVICES) await dropDatabase(dbName(s));
		},
	};
	return t;
}

/** node dist/lib/cluster.js: one process per service, Redis cacher, PostgreSQL, on a transporter. */
/** `npm run cluster` as a target; `env` is more environment for its nodes (before --env's). */
export function cluster(o: TargetOptions, name: string, transporter: string, describe: string, env: Record<string, string> = {}): Target {
	let proc: ChildProcess | undefined;
	let out = "";
	const ns = `${o.ns}_${name.replace(/-/g, "_")}`;
	const dbPrefix = `carsi_${ns}`;
	const t: Target = {
		name,
		kind: "ours",
		describe,
		port: 0,
		pids: () => (proc?.pid ? [proc.pid] : []),
		crashed: () => (proc && (proc.exitCode !== null || proc.signalCode !== null) ? `${name} exited (${proc.exitCode ?? proc.signalCode}):\n${out.slice(-4000)}` : undefined),
		store: service => ({ kind: "pg", url: pgUrl(`${dbPrefix}_${service}`) }),
		async start() {
			t.port = await freePort();
			const nodeEnv: NodeJS.ProcessEnv = {
				PATH: process.env.PATH,
				HOME: process.env.HOME,
				...benchEnv({ port: t.port, namespace: ns }),
				CLUSTER_DB_PREFIX: dbPrefix,
				CLUSTER_PG_URL: SERVERS.postgres,
				TRANSPORTER: transporter,
				CHANNELS_URL: SERVERS.rabbitmq,
				CACHER: SERVERS.redis,
				JWT_SECRET: randomBytes(24).toString("hex"),
				CLUSTER_STOP_TIMEOUT_MS: "10000",
				...env,
				...o.env,
			};
			proc = spawn(process.execPath, [path.join(ROOT, "dist/lib/cluster.js")], { cwd: ROOT, env: nodeEnv, stdio: ["ignore", "pipe", "pipe"] });
			proc.stdout!.on("data", d => (out += d));
			proc.stderr!.on("data", d => (out += d));
			await waitHttp(`http://127.0.0.1:${t.port}/ready`, 120_000, t.crashed);
		},
		seedProducts: (from, to) => seedProducts(t.store!("products"), from, to),
		async stop() {
			await stopTree(proc, 15_000);
		},
		async cleanup() {
			for (const s of DATABASE_SERVICES) await dropDatabase(`${dbPrefix}_${s}`);
			await deleteKeysWithPrefix(`carsi-${ns}-`);
			await deleteAmqpOf(ns, o.run);
		},
	};
	return t;
}

// ---------------------------------------------------------------- RabbitMQ clean-up
function rabbitmqctl(args: string[]): Promise<string> {
	return new Promise((resolve, reject) => {
		const p = spawn("rabbitmqctl", args, { stdio: ["ignore", "pipe", "pipe"] });
		let o = "";
		p.stdout.on("data", d => (o += d));
		p.on("error", reject);
		p.on("exit", code => (code === 0 ? resolve(o) : reject(new Error(`rabbitmqctl ${args.join(" ")} exited with ${code}`))));
	});
}

/** Deletes every RabbitMQ queue and exchange whose name carries `ns` (the transporter's and the channels'). */
export async function deleteAmqpOf(ns: string, run: string): Promise<void> {
	if (!ns.includes(run)) throw new Error(`refusing to delete AMQP resources of ${ns}`);
	const names = async (what: string) => (await rabbitmqctl(["-q", "--no-table-headers", what, "name"])).split("\n").map(s => s.trim()).filter(s => s.includes(ns));
	const [queues, exchanges] = [await names("list_queues"), await names("list_exchanges")];
	const conn = await amqp.connect(SERVERS.rabbitmq);
	try {
		const ch = await conn.createChannel();
		for (const q of queues) await ch.deleteQueue(q);
		for (const x of exchanges) await ch.deleteExchange(x);
		await ch.close();
	} finally {
		await conn.close();
	}
	log(`deleted ${queues.length} queues and ${exchanges.length} exchanges of ${ns}`);
}
