/**
 * npm run soak [-- --duration 300] [--rate N] [--connections 16] [--probe 10]
 *
 * Load held: the local cluster (one moleculer-runner process per service on this machine's
 * PostgreSQL, Redis and RabbitMQ, as `npm run cluster` runs it, in databases, a namespace and
 * keys of its own) under a mixed load of browsing, searching, ordering and cancelling, at 70% of
 * the maximum it measured first (--probe seconds flat out; --rate N skips that and takes N req/s
 * as the maximum), for --duration seconds (default 300). Loopback only, bounded by the rate.
 *
 * Prints the requests, the answers by status, the p99 latency of each minute, and each node's
 * resident memory at the start, the middle and the end; then checks, from the databases, the
 * invariants of test/faults: stock conserved, exactly one notification per order, no half-written
 * order. Exits 1 on any non-2xx answer, any request without an answer, a node that died, or a
 * violated invariant. Everything it created is deleted at the end.
 */
import fs from "node:fs";
import { randomBytes } from "node:crypto";
import autocannon from "autocannon";
import { freePort } from "./common";
import { http, login } from "../test/support/http";
import { TestDatabases, pgQuery } from "../test/support/pg";
import { deleteProcessResources, startProcess, waitStarted, type NodeProcess } from "../test/support/processes";
import { SERVERS, requireServers } from "../test/support/servers";
import { halfWrittenOrders, notificationViolations, stockViolations } from "../test/support/faults";
import { waitFor } from "../test/support/wait";

function arg(name: string, dflt: number): number {
	const i = process.argv.indexOf(`--${name}`);
	const v = i > 0 ? Number(process.argv[i + 1]) : dflt;
	if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} must be a positive number`);
	return v;
}
const DURATION = arg("duration", 300);
const CONNECTIONS = arg("connections", 16);
const PROBE = arg("probe", DURATION >= 120 ? 10 : 5);
const GIVEN_RATE = process.argv.includes("--rate") ? arg("rate", 1) : undefined;
const PRODUCTS = 40;
const CUSTOMERS = 20;
const STOCK = 10_000_000;

const say = (line: string) => process.stdout.write(`[soak] ${line}\n`);
const mb = (kb: number) => `${(kb / 1024).toFixed(0)} MB`;

/** Resident memory of a process in kB (VmRSS), 0 when it is gone. */
function rssKb(pid: number | undefined): number {
	try {
		return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
	} catch {
		return 0;
	}
}

function p99(values: number[]): number {
	if (values.length === 0) return 0;
	const sorted = [...values].sort((a, b) => a - b);
	return Math.round(sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * 0.99) - 1)]);
}

interface Ctx {
	token?: string;
	orderId?: string;
}

/** One connection's cycle: 8 requests, of which 2 orders and 1 cancel of the last one. */
function mixedRequests(productIds: number[], tokens: string[]): autocannon.Request[] {
	const pick = () => productIds[Math.floor(Math.random() * productIds.length)];
	const get: autocannon.Request = { method: "GET", setupRequest: req => ({ ...req, path: `/api/products/${pick()}` }) };
	const order: autocannon.Request = {
		method: "POST",
		setupRequest: (req, context: Ctx) => {
			context.token ??= tokens[Math.floor(Math.random() * tokens.length)];
			return {
				...req,
				path: "/api/orders",
				headers: { "content-type": "application/json", authorization: `Bearer ${context.token}` },
				body: JSON.stringify({ items: [{ productId: pick(), quantity: 1 + Math.floor(Math.random() * 3) }] }),
			};
		},
		onResponse: (status, body, context: Ctx) => {
			if (status === 201) context.orderId = (JSON.parse(body) as { id: string }).id;
		},
	};
	const cancel: autocannon.Request = {
		method: "POST",
		setupRequest: (req, context: Ctx) => {
			const id = context.orderId;
			context.orderId = undefined;
			// No order to cancel (the last one failed): browse instead, so no request is made to fail.
			if (!id) return { ...req, method: "GET", path: "/api/products?page=1&pageSize=20", headers: {}, body: undefined };
			return { ...req, path: `/api/orders/${id}/cancel`, headers: { authorization: `Bearer ${context.token}` }, body: undefined };
		},
	};
	return [
		{ method: "GET", setupRequest: req => ({ ...req, path: `/api/products?page=${1 + Math.floor(Math.random() * 2)}&pageSize=20&sort=-priceCents` }) },
		get,
		{ method: "GET", setupRequest: req => ({ ...req, path: `/api/products?q=${encodeURIComponent(`product ${Math.floor(Math.random() * PRODUCTS)}`)}` }) },
		get,
		order,
		get,
		order,
		cancel,
	];
}

interface Outcome {
	requests: number;
	byStatus: Map<number, number>;
	noAnswer: number;
	p99ByMinute: number[];
	rps: number;
}

async function drive(url: string, seconds: number, requests: autocannon.Request[], rate?: number, onTick?: (elapsedS: number) => void): Promise<Outcome> {
	const byStatus = new Map<number, number>();
	const latencies: number[][] = [];
	const started = Date.now();
	const options = { url, connections: CONNECTIONS, duration: seconds, requests, ...(rate ? { overallRate: Math.round(rate) } : {}) };
	// The callback form answers the instance, whose events give each response's status and latency.
	let instance!: autocannon.Instance;
	const finished = new Promise<autocannon.Result>((resolve, reject) => {
		instance = autocannon(options, (err, result) => (err ? reject(err) : resolve(result)));
	});
	let noAnswer = 0;
	instance.on("response", (_client: unknown, status: number, _bytes: number, ms: number) => {
		byStatus.set(status, (byStatus.get(status) ?? 0) + 1);
		const minute = Math.floor((Date.now() - started) / 60_000);
		(latencies[minute] ??= []).push(ms);
	});
	instance.on("reqError", () => noAnswer++);
	const tick = onTick ? setInterval(() => onTick((Date.now() - started) / 1000), 1000) : undefined;
	const result = await finished;
	if (tick) clearInterval(tick);
	const requests_ = [...byStatus.values()].reduce((a, b) => a + b, 0);
	return { requests: requests_, byStatus, noAnswer: noAnswer + result.timeouts, p99ByMinute: latencies.map(p99), rps: requests_ / seconds };
}

async function main(): Promise<number> {
	await requireServers("postgres", "redis", "rabbitmq");
	const namespace = `carsi-soak-${randomBytes(4).toString("hex")}`;
	const dbs = new TestDatabases(["users", "products", "orders", "notifications"] as const);
	const admin = { email: "admin@soak.local", password: `soak-${randomBytes(6).toString("hex")}` };
	const port = await freePort();
	const base = `http://127.0.0.1:${port}`;
	const nodes: NodeProcess[] = [];
	let failed = false;
	const fail = (line: string) => {
		failed = true;
		say(`FAIL ${line}`);
	};
	try {
		await dbs.create();
		const common = { TRANSPORTER: SERVERS.rabbitmq, CACHER: SERVERS.redis, NAMESPACE: namespace, JWT_SECRET: randomBytes(32).toString("base64url") };
		const layout: Record<string, Record<string, string>> = {
			users: { USERS_DATABASE_URL: dbs.urls.users, ADMIN_EMAIL: admin.email, ADMIN_PASSWORD: admin.password },
			products: { PRODUCTS_DATABASE_URL: dbs.urls.products },
			orders: { ORDERS_DATABASE_URL: dbs.urls.orders },
			notifications: { NOTIFICATIONS_DATABASE_URL: dbs.urls.notifications },
			api: { PORT: String(port) },
		};
		for (const [service, env] of Object.entries(layout)) nodes.push(startProcess(service, { ...common, SERVICES: service, ...env }));
		const t0 = Date.now();
		await Promise.all(nodes.map(n => waitStarted(n, 60_000)));
		await waitFor("the gateway to be ready", async () => (await http(base, "GET", "/ready").catch(() => null))?.status === 200, 60_000);
		say(`cluster up: ${nodes.map(n => `${n.name} (pid ${n.proc.pid})`).join(", ")}; namespace ${namespace}; started in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

		const adminToken = await login(base, admin.email, admin.password);
		const initial = new Map<number, number>();
		for (let i = 0; i < PRODUCTS; i++) {
			const res = await http(base, "POST", "/api/products", {
				token: adminToken,
				body: { sku: `SOAK-${i}`, name: `Soak product ${i}`, category: ["tea", "coffee", "spices", "sweets"][i % 4], priceCents: 500 + i * 10, stock: STOCK },
			});
			if (res.status !== 201) throw new Error(`seeding product ${i}: ${res.status} ${res.text}`);
			initial.set(res.body.id, STOCK);
		}
		const tokens: string[] = [];
		for (let c = 0; c < CUSTOMERS; c++)
			tokens.push((await http(base, "POST", "/api/users/register", { body: { email: `soak${c}@example.com`, password: "password-123", name: `Soak ${c}` } })).body.token);
		const requests = mixedRequests([...initial.keys()], tokens);

		let max = GIVEN_RATE;
		if (max === undefined) {
			const probe = await drive(base, PROBE, requests);
			max = probe.rps;
			say(`maximum measured: ${max.toFixed(0)} req/s over ${PROBE} s flat out with ${CONNECTIONS} connections (${probe.requests} requests)`);
		} else say(`maximum given: ${max} req/s`);
		const target = max * 0.7;

		const memory = new Map(nodes.map(n => [n.name, [rssKb(n.proc.pid)]]));
		say(`soak: ${target.toFixed(0)} req/s (70%) for ${DURATION} s; browse, search, order, cancel`);
		let sampledMiddle = false;
		const soak = await drive(base, DURATION, requests, target, elapsed => {
			if (!sampledMiddle && elapsed >= DURATION / 2) {
				sampledMiddle = true;
				for (const n of nodes) memory.get(n.name)!.push(rssKb(n.proc.pid));
			}
		});
		for (const n of nodes) memory.get(n.name)!.push(rssKb(n.proc.pid));

		const statuses = [...soak.byStatus.entries()].sort(([a], [b]) => a - b).map(([s, n]) => `${s}: ${n}`);
		say(`requests: ${soak.requests} (${soak.rps.toFixed(0)} req/s), by status { ${statuses.join(", ")} }, without an answer: ${soak.noAnswer}`);
		say(`p99 per minute: ${soak.p99ByMinute.map((ms, m) => `min ${m + 1}: ${ms} ms`).join(", ")}`);
		for (const [name, [start, middle, end]] of memory)
		{
			const growth = Math.round((end - start) / 1024);
			say(`memory ${name}: ${mb(start)} at start, ${mb(middle ?? 0)} in the middle, ${mb(end)} at the end (${growth >= 0 ? "+" : ""}${growth} MB)`);
		}

		const errors = [...soak.byStatus.entries()].filter(([s]) => s < 200 || s >= 300).reduce((a, [, n]) => a + n, 0);
		if (errors > 0) fail(`${errors} answers were not 2xx`);
		if (soak.noAnswer > 0) fail(`${soak.noAnswer} requests got no answer`);
		const dead = nodes.filter(n => n.proc.exitCode !== null || n.proc.signalCode !== null);
		if (dead.length > 0) fail(`nodes died: ${dead.map(n => n.name).join(", ")}`);

		// The invariants, once the last events are delivered (bounded).
		// autocannon ends with requests in flight: the orders they place are read again each time.
		let placed: string[] = [];
		let notes: string[] = [];
		let stock: string[] = [];
		await waitFor(
			"the last notifications and stock",
			async () =>
				(placed = (await pgQuery<{ id: string }>(dbs.names.orders, "SELECT id FROM orders")).map(r => r.id)) &&
				(notes = await notificationViolations(dbs.names.notifications, placed)).length === 0 &&
				(stock = await stockViolations(dbs.names.products, dbs.names.orders, initial)).length === 0,
			60_000,
			500,
		).catch(() => undefined);
		const halves = await halfWrittenOrders(dbs.names.orders);
		const cancelled = Number((await pgQuery<{ n: string }>(dbs.names.orders, "SELECT count(*) AS n FROM orders WHERE status = 'cancelled'"))[0].n);
		say(
			`invariants: ${placed.length} orders (${cancelled} cancelled); stock conserved ${stock.length ? "VIOLATED" : "ok"}; ` +
				`exactly one notification per order ${notes.length ? "VIOLATED" : "ok"}; no half-written order ${halves.length ? "VIOLATED" : "ok"}`,
		);
		for (const v of [...stock, ...notes, ...halves].slice(0, 20)) fail(v);
	} finally {
		await Promise.all(nodes.map(n => n.stop()));
		await deleteProcessResources(namespace, nodes).catch(err => say(`clean-up of RabbitMQ and Redis failed: ${(err as Error).message}`));
		await dbs.drop();
	}
	say(failed ? "FAILED" : "passed");
	return failed ? 1 : 0;
}

main().then(
	code => process.exit(code),
	err => {
		say(`FAIL ${(err as Error).stack ?? String(err)}`);
		process.exit(1);
	},
);
