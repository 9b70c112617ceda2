/**
 * `npm run cluster` (lib/cluster.ts) as users run it: one process per service on PostgreSQL, Redis
 * and RabbitMQ, the contract served through its gateway, `npm run repl` (lib/repl.ts) joining it
 * as a node with no service of its own, and a SIGTERM that stops every node cleanly.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { requireServers, SERVERS } from "../support/servers";
import { http, login } from "../support/http";
import { databaseExists, dropDatabase } from "../support/pg";
import { cachePrefix, deleteKeysWithPrefix } from "../support/redis";
import { channelsAmqpResources, deleteAmqpResources, deleteChannelsAmqpResources, moleculerAmqpResources } from "../support/amqp";
import { CONSUMER_GROUPS } from "../../lib/events";
import { waitFor } from "../support/wait";
import { testPorts } from "../support/processes";

const ROOT = path.resolve(__dirname, "../..");
const SERVICES = ["api", "users", "products", "orders", "notifications"];
const namespace = `carsi-test-c${randomBytes(4).toString("hex")}`;
const dbPrefix = `carsi_t_${randomBytes(5).toString("hex")}`;
const databases = ["users", "products", "orders", "notifications"].map(s => `${dbPrefix}_${s}`);
const ADMIN = { email: "admin@cluster.test", password: "admin-password-1" };
const PORT = testPorts();
const base = `http://127.0.0.1:${PORT}`;
const REPL_NODE_ID = `${namespace}-repl`;
const home = mkdtempSync(path.join(os.tmpdir(), "carsi-cluster-test-"));

interface Proc {
	proc: ChildProcess;
	output(): string;
	exited: Promise<number | null>;
}

function run(script: string, env: Record<string, string>, stdin: "pipe" | "ignore" = "ignore"): Proc {
	const proc = spawn(process.execPath, [script], {
		cwd: ROOT,
		env: { PATH: process.env.PATH ?? "", HOME: home, LOG_LEVEL: "info", ...env },
		stdio: [stdin, "pipe", "pipe"],
	});
	let out = "";
	proc.stdout!.on("data", d => (out += d));
	proc.stderr!.on("data", d => (out += d));
	const exited = new Promise<number | null>(resolve => proc.on("exit", code => resolve(code)));
	return { proc, output: () => out, exited };
}

const running = (p: ChildProcess) => p.exitCode === null && p.signalCode === null;
const childPids = (out: string) => [...out.matchAll(/started \w+ \(pid (\d+)\)/g)].map(m => Number(m[1]));
function alive(pid: number): boolean {
	try {
		process.kill(pid, 0);
		return true;
	} catch {
		return false;
	}
}

let cluster: Proc;
let repl: Proc | undefined;

beforeAll(async () => {
	await requireServers("postgres", "redis", "rabbitmq");
	cluster = run("dist/lib/cluster.js", {
		TRANSPORTER: SERVERS.rabbitmq,
		CACHER: SERVERS.redis,
		CLUSTER_PG_URL: SERVERS.postgres,
		CLUSTER_DB_PREFIX: dbPrefix,
		NAMESPACE: namespace,
		PORT: String(PORT),
		ADMIN_EMAIL: ADMIN.email,
		ADMIN_PASSWORD: ADMIN.password,
		OUTBOX_POLL_MS: "200",
	});
	await waitFor(
		"the cluster to print its gateway URL",
		() => {
			if (!running(cluster.proc)) throw new Error(`the cluster exited:\n${cluster.output()}`);
			return cluster.output().includes(`ready: the gateway answers on http://localhost:${PORT}`);
		},
		40_000,
		100,
	).catch(err => {
		throw new Error(`${(err as Error).message}\n${cluster.output()}`);
	});
}, 50_000);

afterAll(async () => {
	if (repl && running(repl.proc)) repl.proc.kill("SIGKILL");
	if (running(cluster.proc)) cluster.proc.kill("SIGKILL");
	await cluster.exited;
	// The nodes run in their own process group: after a failed stop, kill the ones left, by pid.
	for (const pid of childPids(cluster.output())) if (alive(pid)) process.kill(pid, "SIGKILL");
	const nodeIDs = [...cluster.output().matchAll(/Node ID: (\S+)/g)].map(m => m[1]);
	await deleteAmqpResources(moleculerAmqpResources(namespace, [...nodeIDs, REPL_NODE_ID]), namespace);
	await deleteChannelsAmqpResources(channelsAmqpResources(namespace, CONSUMER_GROUPS), namespace);
	await deleteKeysWithPrefix(cachePrefix(namespace));
	for (const db of databases) await dropDatabase(db);
	rmSync(home, { recursive: true, force: true });
}, 30_000);

it("serves the contract through the gateway, joins a REPL node and stops every node on SIGTERM", async () => {
	const out = cluster.output();
	// One node per service, each with its own database created by the cluster, one generated secret.
	for (const s of SERVICES) expect(out).toMatch(new RegExp(`^\\[${s}\\]\\s+.*ServiceBroker with \\d+ service\\(s\\) started successfully`, "m"));
	expect(new Set([...out.matchAll(/Node ID: (\S+)/g)].map(m => m[1])).size).toBe(5);
	for (const db of databases) expect(await databaseExists(db)).toBe(true);
	expect(out).toContain("JWT_SECRET is not set: the nodes share a random secret");
	expect((await http(base, "GET", "/ready")).status).toBe(200);

	// A customer: register on users, log in, /me through the gateway's token check.
	const reg = await http(base, "POST", "/api/users/register", { body: { email: "c@cluster.test", password: "password-123", name: "C" } });
	expect(reg.status).toBe(201);
	const customer = await login(base, "c@cluster.test", "password-123");
	expect((await http(base, "GET", "/api/users/me", { token: customer })).body).toEqual(reg.body.user);

	// The admin's product: MISS then HIT through Redis, a PATCH seen at once.
	const admin = await login(base, ADMIN.email, ADMIN.password);
	const sku = `CL-${randomBytes(3).toString("hex")}`;
	const created = await http(base, "POST", "/api/products", { token: admin, body: { sku, name: "Cezve", category: "kitchen", priceCents: 4500, stock: 5 } });
	expect(created.status).toBe(201);
	const id = created.body.id;
	expect((await http(base, "GET", `/api/products/${id}`)).headers.get("x-cache")).toBe("MISS");
	expect((await http(base, "GET", `/api/products/${id}`)).headers.get("x-cache")).toBe("HIT");
	const patched = await http(base, "PATCH", `/api/products/${id}`, { token: admin, body: { priceCents: 3900 } });
	expect(patched.status).toBe(200);
	expect((await http(base, "GET", `/api/products/${id}`)).body.priceCents).toBe(3900);

	// An order, and its notification from the notifications node.
	const order = await http(base, "POST", "/api/orders", { token: customer, body: { items: [{ productId: id, quantity: 2 }] } });
	expect(order.status).toBe(201);
	await waitFor("the order's notification", async () => {
		const res = await http(base, "GET", "/api/notifications", { token: customer });
		return res.status === 200 && res.body.rows.some((n: { type: string; orderId?: string }) => n.type === "order.created" && n.orderId === order.body.id);
	}, 15_000, 200);

	// `npm run repl` with TRANSPORTER set: a node with no service of its own, driven on stdin.
	repl = run("dist/lib/repl.js", { TRANSPORTER: SERVERS.rabbitmq, CACHER: SERVERS.redis, NAMESPACE: namespace, NODE_ID: REPL_NODE_ID }, "pipe");
	const r = repl;
	await waitFor("the REPL prompt", () => r.output().includes("mol $"), 20_000, 100);
	const servicesTable = () => r.output().slice(r.output().lastIndexOf("Service "));
	await waitFor(
		"the REPL to list the five services",
		async () => {
			const before = r.output().length;
			r.proc.stdin!.write("services\n");
			await waitFor("a table", () => r.output().length > before && r.output().lastIndexOf("╚") > before, 2000, 50);
			return SERVICES.every(s => new RegExp(`║ ${s}\\s+│`).test(servicesTable()));
		},
		10_000,
		200,
	);
	const beforeCall = r.output().length;
	r.proc.stdin!.write(`call products.get --id ${id}\n`);
	await waitFor("the product in the REPL", () => r.output().slice(beforeCall).includes(sku), 10_000, 50);
	expect(r.output().slice(beforeCall)).toContain(">> Response:");
	r.proc.stdin!.end("quit\n");
	expect(await r.exited).toBe(0);
	// It ran no service of its own (only the internal $node and $channels).
	expect(r.output()).not.toMatch(/'(api|users|products|orders|notifications)' service is registered/);
	expect(r.output()).toMatch(/'\$node' service is registered/);
	expect(r.output()).toMatch(/ServiceBroker with 2 service\(s\) started successfully/);

	// SIGTERM: every node stops gracefully, the cluster exits 0.
	const pids = childPids(cluster.output());
	expect(pids).toHaveLength(5);
	const t0 = Date.now();
	cluster.proc.kill("SIGTERM");
	let timer: NodeJS.Timeout | undefined;
	const code = await Promise.race([cluster.exited, new Promise<string>(r => (timer = setTimeout(() => r("still running after 20 s"), 20_000)))]);
	clearTimeout(timer);
	expect(code).toBe(0);
	expect(Date.now() - t0).toBeLessThan(16_000);
	for (const s of SERVICES) expect(cluster.output()).toMatch(new RegExp(`\\[cluster\\]\\s+${s} exited with code 0`));
	expect(cluster.output()).toContain("every node stopped");
	expect(pids.filter(alive)).toEqual([]);
}, 60_000);
