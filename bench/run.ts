/**
 * `npm run bench`: the cached product read (GET /api/products/:id) measured with autocannon's
 * programmatic API against the bare limits, in the same run. Everything it measures it starts
 * itself, on loopback, and stops and cleans up at the end (temp DATA_DIRs, PostgreSQL databases,
 * Redis keys, RabbitMQ queues and exchanges of a random namespace).
 *
 *   npm run bench [-- --smoke] [--duration 5] [--warmup 3] [--connections 50] [--products 10000]
 *                 [--targets base-node-redis,base-mw-redis,embedded,embedded-redis,distributed]
 *
 * Targets: the two baselines (bench/baselines), the embedded default (one moleculer-runner, SQLite
 * in a temp DATA_DIR, Memory cacher), the same with the Redis cacher (CACHER set), and the
 * distributed topology (node dist/lib/cluster.js: one process per service on AMQP, Redis and
 * PostgreSQL). Each (target, id distribution) is measured twice, interleaved: pass 1 goes over
 * every scenario, then pass 2. --smoke: one pass, short, and exit 1 when a scenario errs (more
 * than 1% non-2xx/errors/timeouts, or a process exiting). Needs `npm run build` first (dist/).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import amqp from "amqplib";
import autocannon from "autocannon";
import Redis from "ioredis";
import { Client } from "pg";
import sqlite3 from "sqlite3";
import { DATABASE_SERVICES } from "../lib/config";
import { startProcess, type NodeProcess } from "../test/support/processes";
import { dropDatabase, pgUrl } from "../test/support/pg";
import { deleteKeysWithPrefix } from "../test/support/redis";
import { SERVERS } from "../test/support/servers";
import { cpuSeconds, freePort, isAlive, processTree, product, sampler, type Distribution } from "./common";

const ROOT = path.resolve(__dirname, "..");

// ---------------------------------------------------------------- options
function arg(name: string, dflt: string): string {
	const i = process.argv.indexOf(`--${name}`);
	return i > 0 && process.argv[i + 1] ? process.argv[i + 1] : dflt;
}
const SMOKE = process.argv.includes("--smoke");
const DURATION = Number(arg("duration", SMOKE ? "1" : "5"));
const WARMUP = Number(arg("warmup", SMOKE ? "0" : "3"));
const CONNECTIONS = Number(arg("connections", "50"));
const PRODUCTS = Number(arg("products", SMOKE ? "1000" : "10000"));
const PASSES = SMOKE ? 1 : 2;
/** --profile <dir>: our targets write V8 CPU profiles into <dir> (bench/cpu-profile.js; summarise with bench/profile-summary.ts). */
const PROFILE_DIR = process.argv.includes("--profile") ? path.resolve(arg("profile", "bench/results/profiles")) : undefined;
const PROFILE_ENV: Record<string, string> = PROFILE_DIR ? { NODE_OPTIONS: `--require ${path.join(__dirname, "cpu-profile.js")}`, CARSI_CPU_PROFILE_DIR: PROFILE_DIR } : {};
const ALL_TARGETS = ["base-node-redis", "base-mw-redis", "embedded", "embedded-redis", "distributed"];
const TARGETS = arg("targets", ALL_TARGETS.join(",")).split(",");
const DISTRIBUTIONS: Distribution[] = ["uniform", "zipf"];
for (const t of TARGETS) if (!ALL_TARGETS.includes(t)) throw new Error(`unknown target ${t}; one of ${ALL_TARGETS.join(", ")}`);

const RUN = randomBytes(4).toString("hex");
const NS = `bench_${RUN}`; // every Redis key, queue, exchange and database of this run carries it
const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);

// ---------------------------------------------------------------- targets
interface Target {
	name: string;
	kind: "baseline" | "ours";
	describe: string;
	port: number;
	pid(): number | undefined;
	start(): Promise<void>;
	seed(): Promise<void>;
	stop(): Promise<void>;
	cleanup(): Promise<void>;
	crashed(): string | undefined;
}

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

async function waitHttp(url: string, timeoutMs: number, crashed: () => string | undefined): Promise<void> {
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

/** A TypeScript baseline in its own process (ts-node, transpile only). */
function baseline(name: string, file: string, describe: string, env: Record<string, string>, keyPrefix: string): Target {
	let proc: ChildProcess | undefined;
	let out = "";
	const t: Target = {
		name,
		kind: "baseline",
		describe,
		port: 0,
		pid: () => proc?.pid,
		crashed: () => (proc && (proc.exitCode !== null || proc.signalCode !== null) ? `${name} exited (${proc.exitCode ?? proc.signalCode}):\n${out.slice(-4000)}` : undefined),
		async start() {
			t.port = await freePort();
			proc = spawn(process.execPath, ["-r", "ts-node/register/transpile-only", path.join(__dirname, "baselines", file)], {
				cwd: ROOT,
				env: { ...process.env, ...env, ...PROFILE_ENV, PORT: String(t.port), REDIS_URL: SERVERS.redis },
				stdio: ["ignore", "pipe", "pipe"],
			});
			proc.stdout!.on("data", d => (out += d));
			proc.stderr!.on("data", d => (out += d));
			const deadline = Date.now() + 30_000;
			while (!out.includes("ready")) {
				if (t.crashed()) throw new Error(t.crashed());
				if (Date.now() > deadline) throw new Error(`${name} did not start:\n${out}`);
				await new Promise(r => setTimeout(r, 100));
			}
		},
		async seed() {},
		async stop() {
			await stopTree(proc, 5000);
		},
		async cleanup() {
			await deleteKeysWithPrefix(keyPrefix);
		},
	};
	return t;
}

/** Seeds products 1..n straight into the products table (the services' migrations made it). */
async function seedSqlite(file: string, n: number): Promise<void> {
	const db = new sqlite3.Database(file);
	const run = (sql: string, params: unknown[] = []) => new Promise<void>((res, rej) => db.run(sql, params, err => (err ? rej(err) : res())));
	try {
		await run("PRAGMA busy_timeout = 5000");
		await run("BEGIN");
		for (let i = 1; i <= n; i += 500) {
			const rows = [];
			for (let id = i; id < Math.min(i + 500, n + 1); id++) rows.push(product(id));
			await run(
				`INSERT INTO products (id, sku, name, description, category, price_cents, currency, stock, created_at, updated_at) VALUES ${rows.map(() => "(?,?,?,?,?,?,?,?,?,?)").join(",")}`,
				rows.flatMap(p => [p.id, p.sku, p.name, p.description, p.category, p.priceCents, p.currency, p.stock, "2026-01-01 00:00:00.000 +00:00", "2026-01-01 00:00:00.000 +00:00"]),
			);
		}
		await run("COMMIT");
	} finally {
		await new Promise(r => db.close(r));
	}
}

async function seedPg(database: string, n: number): Promise<void> {
	const client = new Client({ connectionString: pgUrl(database) });
	await client.connect();
	try {
		for (let i = 1; i <= n; i += 1000) {
			const rows = [];
			for (let id = i; id < Math.min(i + 1000, n + 1); id++) rows.push(product(id));
			await client.query(
				`INSERT INTO products (id, sku, name, description, category, price_cents, currency, stock, created_at, updated_at) VALUES ${rows.map((_, r) => `(${Array.from({ length: 10 }, (_, c) => `$${r * 10 + c + 1}`).join(",")})`).join(",")}`,
				rows.flatMap(p => [p.id, p.sku, p.name, p.description, p.category, p.priceCents, p.currency, p.stock, p.createdAt, p.updatedAt]),
			);
		}
		await client.query("SELECT setval(pg_get_serial_sequence('products', 'id'), $1)", [n]);
	} finally {
		await client.end();
	}
}

/** The embedded default: every service in one moleculer-runner, SQLite in a temp DATA_DIR. */
function embedded(name: string, withRedis: boolean): Target {
	let node: NodeProcess | undefined;
	let dataDir = "";
	const ns = `${NS}_${name.replace(/-/g, "_")}`;
	const t: Target = {
		name,
		kind: "ours",
		describe: withRedis ? "embedded default with CACHER (Redis cacher), SQLite" : "embedded default: one process, SQLite, Memory cacher",
		port: 0,
		pid: () => node?.proc.pid,
		crashed: () => (node && (node.proc.exitCode !== null || node.proc.signalCode !== null) ? `${name} exited (${node.proc.exitCode ?? node.proc.signalCode}):\n${node.output().slice(-4000)}` : undefined),
		async start() {
			t.port = await freePort();
			dataDir = fs.mkdtempSync(path.join(os.tmpdir(), `carsi-bench-${name}-`));
			node = startProcess(name, {
				DATA_DIR: dataDir,
				PORT: String(t.port),
				LOG_LEVEL: "warn",
				NAMESPACE: ns,
				ADMIN_PASSWORD: "bench-admin-password",
				...(withRedis ? { CACHER: SERVERS.redis } : {}),
				...PROFILE_ENV,
				...(process.env.BENCH_METRICS ? { BENCH_METRICS: process.env.BENCH_METRICS } : {}),
			});
			await waitHttp(`http://127.0.0.1:${t.port}/ready`, 60_000, t.crashed);
		},
		async seed() {
			await seedSqlite(path.join(dataDir, "products.sqlite"), PRODUCTS);
		},
		async stop() {
			if (node) await Promise.race([node.stop(), new Promise(r => setTimeout(r, 10_000))]);
			if (node?.proc.pid && isAlive(node.proc.pid)) node.proc.kill("SIGKILL");
		},
		async cleanup() {
			if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
			if (withRedis) await deleteKeysWithPrefix(`carsi-${ns}-`);
		},
	};
	return t;
}

/** The distributed topology: node dist/lib/cluster.js, one process per service, AMQP + Redis + PostgreSQL. */
function distributed(): Target {
	let proc: ChildProcess | undefined;
	let out = "";
	const ns = `${NS}_dist`;
	const dbPrefix = `carsi_${NS}`;
	const t: Target = {
		name: "distributed",
		kind: "ours",
		describe: "node dist/lib/cluster.js: 5 processes over RabbitMQ, Redis cacher, PostgreSQL",
		port: 0,
		pid: () => proc?.pid,
		crashed: () => (proc && (proc.exitCode !== null || proc.signalCode !== null) ? `cluster exited (${proc.exitCode ?? proc.signalCode}):\n${out.slice(-4000)}` : undefined),
		async start() {
			t.port = await freePort();
			const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME };
			Object.assign(env, {
				NAMESPACE: ns,
				CLUSTER_DB_PREFIX: dbPrefix,
				CLUSTER_PG_URL: SERVERS.postgres,
				TRANSPORTER: SERVERS.rabbitmq,
				CACHER: SERVERS.redis,
				PORT: String(t.port),
				JWT_SECRET: randomBytes(24).toString("hex"),
				ADMIN_PASSWORD: "bench-admin-password",
				LOG_LEVEL: "warn",
				CLUSTER_STOP_TIMEOUT_MS: "10000",
				...PROFILE_ENV,
			});
			proc = spawn(process.execPath, [path.join(ROOT, "dist/lib/cluster.js")], { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
			proc.stdout!.on("data", d => (out += d));
			proc.stderr!.on("data", d => (out += d));
			await waitHttp(`http://127.0.0.1:${t.port}/ready`, 90_000, t.crashed);
		},
		async seed() {
			await seedPg(`${dbPrefix}_products`, PRODUCTS);
		},
		async stop() {
			await stopTree(proc, 15_000);
		},
		async cleanup() {
			for (const s of DATABASE_SERVICES) await dropDatabase(`${dbPrefix}_${s}`);
			await deleteKeysWithPrefix(`carsi-${ns}-`);
			await deleteAmqpOf(ns);
		},
	};
	return t;
}

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
async function deleteAmqpOf(ns: string): Promise<void> {
	if (!ns.includes(RUN)) throw new Error(`refusing to delete AMQP resources of ${ns}`);
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

// ---------------------------------------------------------------- measure
interface Measure {
	target: string;
	distribution: Distribution;
	pass: number;
	requests: number;
	reqPerSec: number;
	p50: number;
	p99: number;
	non2xx: number;
	errors: number;
	timeouts: number;
	hitRatio: number | null;
	cpu: Record<string, number>; // share of one core over the measure, per process
	/** CPU µs per request of the target's own processes (not autocannon, not the servers): steadier than req/s on a busy machine. */
	cpuUsPerReq: number;
	failed: boolean;
}

/** GETs every product once, CONNECTIONS at a time: fills the cache and checks the seed (each must answer 200). */
async function sweep(t: Target): Promise<void> {
	const t0 = Date.now();
	let next = 1;
	let bad = 0;
	await Promise.all(
		Array.from({ length: CONNECTIONS }, async () => {
			while (next <= PRODUCTS) {
				const res = await fetch(`http://127.0.0.1:${t.port}/api/products/${next++}`);
				await res.arrayBuffer();
				if (res.status !== 200) bad++;
			}
		}),
	);
	if (bad > 0) throw new Error(`${t.name}: ${bad} of ${PRODUCTS} products did not answer 200 after seeding`);
	log(`${t.name}: read all ${PRODUCTS} products once in ${Date.now() - t0} ms`);
}

/** `seconds` of load, ids drawn from `dist`. */
async function load(t: Target, dist: Distribution, seconds: number) {
	const next = sampler(dist, PRODUCTS);
	let hits = 0;
	let misses = 0;
	const result = await autocannon({
		url: `http://127.0.0.1:${t.port}`,
		connections: CONNECTIONS,
		duration: seconds,
		timeout: 10,
		requests: [
			{
				method: "GET",
				setupRequest: req => ({ ...req, path: `/api/products/${next()}` }),
				onResponse: (_status, _body, _ctx, headers) => {
					const h = (headers as Record<string, string> | undefined)?.["x-cache"] ?? (headers as Record<string, string> | undefined)?.["X-Cache"];
					if (h === "HIT") hits++;
					else if (h === "MISS") misses++;
				},
			},
		],
	});
	return { result, hits, misses };
}

function cpuSnapshot(t: Target): Map<number, number> {
	const snap = new Map<number, number>();
	const root = t.pid();
	for (const pid of root ? processTree(root) : []) snap.set(pid, cpuSeconds(pid));
	snap.set(process.pid, cpuSeconds(process.pid));
	for (const pid of serverPids()) snap.set(pid, cpuSeconds(pid));
	return snap;
}

/** The servers' processes on this machine (Redis, RabbitMQ, PostgreSQL), whoever started them. */
const SERVER_COMMS: Record<string, string> = { "redis-server": "redis-server", "beam.smp": "rabbitmq", postgres: "postgresql" };
function serverPids(): number[] {
	const out: number[] = [];
	for (const entry of fs.readdirSync("/proc")) {
		if (!/^\d+$/.test(entry)) continue;
		try {
			if (fs.readFileSync(`/proc/${entry}/comm`, "utf8").trim() in SERVER_COMMS) out.push(Number(entry));
		} catch {
			/* gone */
		}
	}
	return out;
}

function processLabel(pid: number): string {
	if (pid === process.pid) return "autocannon";
	try {
		const comm = fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim();
		if (comm in SERVER_COMMS) return SERVER_COMMS[comm];
		const env = fs.readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").find(e => e.startsWith("SERVICES="));
		if (env) return env.slice("SERVICES=".length);
		const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
		return path.basename(cmd.find(c => /\.(js|ts)$/.test(c)) ?? cmd[0]);
	} catch {
		return String(pid);
	}
}

async function measure(t: Target, dist: Distribution, pass: number): Promise<Measure> {
	const before = cpuSnapshot(t);
	const t0 = process.hrtime.bigint();
	const { result: r, hits, misses } = await load(t, dist, DURATION);
	const wall = Number(process.hrtime.bigint() - t0) / 1e9;
	const cpu: Record<string, number> = {};
	const own = new Set(t.pid() ? processTree(t.pid()!) : []);
	let ownCpu = 0;
	for (const [pid, c0] of before) {
		const label = processLabel(pid);
		const used = cpuSeconds(pid) - c0;
		if (own.has(pid)) ownCpu += used;
		cpu[label] = Math.round(((cpu[label] ?? 0) + used / wall) * 100) / 100;
	}
	const total = r.requests.total + r.errors + r.timeouts;
	const bad = r.non2xx + r.errors + r.timeouts;
	const why = t.crashed();
	const m: Measure = {
		target: t.name,
		distribution: dist,
		pass,
		requests: r.requests.total,
		reqPerSec: Math.round(r.requests.total / r.duration),
		p50: r.latency.p50,
		p99: r.latency.p99,
		non2xx: r.non2xx,
		errors: r.errors,
		timeouts: r.timeouts,
		hitRatio: hits + misses > 0 ? Math.round((hits / (hits + misses)) * 1000) / 1000 : null,
		cpu,
		cpuUsPerReq: r.requests.total ? Math.round((ownCpu * 1e6) / r.requests.total) : 0,
		failed: total === 0 || bad / total > 0.01 || why !== undefined,
	};
	log(`${t.name} ${dist} pass ${pass}: ${m.reqPerSec} req/s p50 ${m.p50} ms p99 ${m.p99} ms hit ${m.hitRatio ?? "-"} cpu ${m.cpuUsPerReq} µs/req non2xx ${m.non2xx} errors ${m.errors}${m.failed ? "  FAILED" : ""}`);
	if (why) log(why);
	return m;
}

// ---------------------------------------------------------------- machine
async function versions(needed: Set<string>): Promise<Record<string, string>> {
	const v: Record<string, string> = { node: process.version, moleculer: require("moleculer").MOLECULER_VERSION, autocannon: require("autocannon/package.json").version };
	if (needed.has("redis")) {
		const r = new Redis(SERVERS.redis, { maxRetriesPerRequest: 1 });
		v.redis = /redis_version:(\S+)/.exec(await r.info("server"))?.[1] ?? "?";
		r.disconnect();
	}
	if (needed.has("postgres")) {
		const c = new Client({ connectionString: SERVERS.postgres });
		await c.connect();
		v.postgresql = (await c.query("SHOW server_version")).rows[0].server_version;
		await c.end();
	}
	if (needed.has("rabbitmq")) {
		const conn = await amqp.connect(SERVERS.rabbitmq);
		v.rabbitmq = String((conn as unknown as { connection: { serverProperties: { version: string } } }).connection.serverProperties.version);
		await conn.close();
	}
	return v;
}

// ---------------------------------------------------------------- report
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

function report(measures: Measure[], machine: Record<string, unknown>, cmd: string): string {
	const base = (name: string, d: Distribution) => {
		const xs = measures.filter(m => m.target === name && m.distribution === d && !m.failed).map(m => m.reqPerSec);
		return xs.length ? mean(xs) : undefined;
	};
	const ratio = (m: Measure, name: string) => {
		const b = base(name, m.distribution);
		return b ? (m.reqPerSec / b).toFixed(2) : "–";
	};
	const lines = [
		`# Cached product read, ${new Date().toISOString()}`,
		"",
		`\`${cmd}\` — ${CONNECTIONS} connections, ${DURATION} s per measure after ${WARMUP} s warm-up per target, ${PRODUCTS} products, ${PASSES} pass(es) interleaved`,
		"",
		`Machine: ${machine.cpus} × ${machine.cpuModel}, ${machine.memoryGiB} GiB, ${machine.platform}; ` +
			Object.entries((machine.versions ?? {}) as Record<string, string>).map(([k, v]) => `${k} ${v}`).join(", "),
		"",
		"| target | ids | pass | req/s | p50 ms | p99 ms | hit ratio | × node+Redis | × moleculer-web+Redis | non-2xx / errors | CPU (cores) |",
		"|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
	];
	const order = (m: Measure) => ALL_TARGETS.indexOf(m.target) * 10 + DISTRIBUTIONS.indexOf(m.distribution) * 3 + m.pass;
	for (const m of [...measures].sort((a, b) => order(a) - order(b))) {
		const cpu = Object.entries(m.cpu).filter(([, v]) => v >= 0.01).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ");
		lines.push(
			`| ${m.target}${m.failed ? " **FAILED**" : ""} | ${m.distribution} | ${m.pass} | ${m.reqPerSec} | ${m.p50} | ${m.p99} | ${m.hitRatio ?? "–"} | ${ratio(m, "base-node-redis")} | ${ratio(m, "base-mw-redis")} | ${m.non2xx} / ${m.errors + m.timeouts} | ${cpu} |`,
		);
	}
	lines.push("", "Ratios: this row's req/s over the mean of the baseline's passes with the same ids. CPU: CPU seconds per wall second of each process during the measure.");
	return lines.join("\n") + "\n";
}

// ---------------------------------------------------------------- main
async function main(): Promise<number> {
	if (!fs.existsSync(path.join(ROOT, "dist/lib/cluster.js"))) throw new Error("dist/ is missing: run npm run build first");
	const started = Date.now();
	const phase = (what: string) => log(`${what} at ${((Date.now() - started) / 1000).toFixed(1)} s`);
	const targets: Target[] = [];
	for (const name of TARGETS) {
		if (name === "base-node-redis")
			targets.push(baseline(name, "node-redis.ts", "bare node:http + one ioredis GET", { BENCH_PREFIX: `carsi-${NS}_base-`, BENCH_PRODUCTS: String(PRODUCTS) }, `carsi-${NS}_base-`));
		if (name === "base-mw-redis") targets.push(baseline(name, "moleculer-web-redis.ts", "bare moleculer-web route → bare action, Redis cacher", { NAMESPACE: `${NS}_mw` }, `carsi-${NS}_mw-`));
		if (name === "embedded") targets.push(embedded(name, false));
		if (name === "embedded-redis") targets.push(embedded(name, true));
		if (name === "distributed") targets.push(distributed());
	}
	const needed = new Set<string>();
	for (const t of TARGETS) {
		if (t !== "embedded") needed.add("redis");
		if (t === "distributed") needed.add("postgres").add("rabbitmq");
	}
	const measures: Measure[] = [];
	let failure: string | undefined;
	const stopping: { done?: Promise<void> } = {};
	const teardown = () =>
		(stopping.done ??= (async () => {
			const t0 = Date.now();
			await Promise.all(targets.map(t => t.stop().catch(err => log(`stop ${t.name}: ${err.message}`))));
			const t1 = Date.now();
			await Promise.all(targets.map(t => t.cleanup().catch(err => log(`cleanup ${t.name}: ${err.message}`))));
			log(`stopped in ${t1 - t0} ms, cleaned up in ${Date.now() - t1} ms`);
		})());
	for (const sig of ["SIGINT", "SIGTERM"] as const)
		process.once(sig, () => {
			log(`${sig}: stopping and cleaning up`);
			void teardown().finally(() => process.exit(130));
		});
	let machine: Record<string, unknown> = {};
	try {
		machine = {
			host: os.hostname(),
			cpus: os.cpus().length,
			cpuModel: os.cpus()[0]?.model.trim(),
			memoryGiB: Math.round(os.totalmem() / 2 ** 30),
			platform: `${os.type()} ${os.release()}`,
			versions: await versions(needed),
		};
		log(`namespace ${NS}; starting ${targets.map(t => t.name).join(", ")}`);
		await Promise.all(targets.map(async t => {
			const t0 = Date.now();
			await t.start();
			await t.seed();
			log(`${t.name} up and seeded on port ${t.port} in ${Date.now() - t0} ms`);
		}));
		phase("all up and seeded");
		for (const t of targets) {
			await sweep(t); // every product once: the cache holds them all
			if (WARMUP > 0) for (const d of DISTRIBUTIONS) await load(t, d, WARMUP / 2);
		}
		phase("warmed up");
		for (let pass = 1; pass <= PASSES; pass++) for (const t of targets) for (const d of DISTRIBUTIONS) measures.push(await measure(t, d, pass));
	} catch (err) {
		failure = (err as Error).stack ?? String(err);
		log(`error: ${failure}`);
	} finally {
		await teardown();
	}
	const cmd = `npm run bench -- ${process.argv.slice(2).join(" ")}`.replace(/ -- $/, "");
	const md = report(measures, machine, cmd);
	process.stdout.write("\n" + md);
	const stamp = new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19);
	const dir = path.join(__dirname, "results");
	fs.mkdirSync(dir, { recursive: true });
	const base = path.join(dir, `${stamp}-${os.hostname()}${SMOKE ? "-smoke" : ""}`);
	const options = { smoke: SMOKE, duration: DURATION, warmup: WARMUP, connections: CONNECTIONS, products: PRODUCTS, passes: PASSES, targets: TARGETS };
	fs.writeFileSync(`${base}.json`, JSON.stringify({ command: cmd, options, machine, targets: targets.map(t => ({ name: t.name, kind: t.kind, describe: t.describe })), measures, failure, seconds: (Date.now() - started) / 1000 }, null, 2));
	fs.writeFileSync(`${base}.md`, md);
	log(`wrote ${path.relative(ROOT, base)}.json and .md in ${((Date.now() - started) / 1000).toFixed(1)} s`);
	const failed = measures.filter(m => m.failed);
	if (failure || failed.length || measures.length !== targets.length * DISTRIBUTIONS.length * PASSES) {
		log(`FAILED: ${failure ? "a run error; " : ""}${failed.map(m => `${m.target}/${m.distribution}/${m.pass}`).join(", ")}`);
		return 1;
	}
	return 0;
}

main().then(
	code => process.exit(code),
	err => {
		console.error(err);
		process.exit(1);
	},
);
