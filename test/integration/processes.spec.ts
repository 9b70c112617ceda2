/**
 * The distributed mode as users run it: one moleculer-runner process per service (api, users,
 * products) on PostgreSQL, Redis and RabbitMQ, configured only through the environment of API.md.
 */
import { randomBytes } from "node:crypto";
import type Redis from "ioredis";
import { requireServers, SERVERS } from "../support/servers";
import { startProcess, waitStarted, testPorts, type NodeProcess } from "../support/processes";
import { http, login } from "../support/http";
import { createDatabase, dropDatabase, pgUrl, uniqueDbName } from "../support/pg";
import { cachePrefix, deleteKeysWithPrefix, redisClient } from "../support/redis";
import { deleteAmqpResources, moleculerAmqpResources } from "../support/amqp";
import { waitFor } from "../support/wait";
import { channelsAmqpResources, deleteChannelsAmqpResources } from "../support/amqp";
import { CONSUMER_GROUPS } from "../../lib/events";

const namespace = `carsi-test-p${randomBytes(4).toString("hex")}`;
const databases = {
	users: uniqueDbName("users"),
	products: uniqueDbName("products"),
	orders: uniqueDbName("orders"),
	notifications: uniqueDbName("notifications"),
};
const dbUrl = (name: string) => pgUrl(name);
const ADMIN = { email: "admin@processes.test", password: "admin-password-1" };
const PORT = testPorts();
const base = `http://127.0.0.1:${PORT}`;
const nodes: NodeProcess[] = [];
/** Every process of the suite, for the AMQP clean-up (also the ones that fail to start). */
const spawned: NodeProcess[] = [];
let redis: Redis;

function start(name: string, env: Record<string, string>): NodeProcess {
	const node = startProcess(name, env);
	spawned.push(node);
	return node;
}

const common = {
	TRANSPORTER: SERVERS.rabbitmq,
	CACHER: SERVERS.redis,
	NAMESPACE: namespace,
	JWT_SECRET: "processes-test-secret",
};

beforeAll(async () => {
	await requireServers("postgres", "redis", "rabbitmq");
	redis = redisClient();
	for (const db of Object.values(databases)) await createDatabase(db);
	nodes.push(
		start("users", { ...common, SERVICES: "users", USERS_DATABASE_URL: dbUrl(databases.users), ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password }),
		start("products", { ...common, SERVICES: "products", PRODUCTS_DATABASE_URL: dbUrl(databases.products) }),
		start("orders", { ...common, SERVICES: "orders", ORDERS_DATABASE_URL: dbUrl(databases.orders) }),
		start("notifications", { ...common, SERVICES: "notifications", NOTIFICATIONS_DATABASE_URL: dbUrl(databases.notifications) }),
		start("api", { ...common, SERVICES: "api", PORT: String(PORT) }),
	);
	await Promise.all(nodes.map(n => waitStarted(n)));
	await waitFor("the gateway to be ready", async () => (await http(base, "GET", "/ready").catch(() => ({ status: 0 }))).status === 200);
});

afterAll(async () => {
	const codes = await Promise.all(nodes.map(n => n.stop()));
	await Promise.all(spawned.map(n => n.stop("SIGKILL")));
	const nodeIDs = spawned.map(n => /Node ID: (\S+)/.exec(n.output())?.[1]).filter((id): id is string => !!id);
	await deleteAmqpResources(moleculerAmqpResources(namespace, nodeIDs), namespace);
	await deleteChannelsAmqpResources(channelsAmqpResources(namespace, CONSUMER_GROUPS), namespace);
	await deleteKeysWithPrefix(cachePrefix(namespace));
	redis.disconnect();
	for (const db of Object.values(databases)) await dropDatabase(db);
	// Last, so that a failed stop still cleans up: every node stopped gracefully on SIGTERM.
	expect(codes).toEqual([0, 0, 0, 0, 0]);
});

it("runs each service as its own node with the design's transporter and cacher", () => {
	for (const node of nodes) {
		expect(node.output()).toContain("Transporter: SafeAmqpTransporter");
		expect(node.output()).toContain("Cacher: SafeRedisCacher");
	}
	expect(new Set(nodes.map(n => /Node ID: (\S+)/.exec(n.output())?.[1])).size).toBe(5);
});

it("reports every dependency on /ready", async () => {
	const ready = await http(base, "GET", "/ready");
	expect(ready.body.checks).toEqual({
		cacher: "up",
		transporter: "up",
		events: "up",
		"service:users": "up",
		"service:products": "up",
		"service:orders": "up",
		"service:notifications": "up",
	});
});

it("registers, logs in and answers /me across nodes", async () => {
	const reg = await http(base, "POST", "/api/users/register", { body: { email: "p@example.com", password: "password-123", name: "P" } });
	expect(reg.status).toBe(201);
	const token = await login(base, "p@example.com", "password-123");
	const me = await http(base, "GET", "/api/users/me", { token });
	expect(me.body).toEqual(reg.body.user);
});

it("serves a product MISS then HIT from Redis, and the new value right after a PATCH", async () => {
	const token = await login(base, ADMIN.email, ADMIN.password);
	const created = await http(base, "POST", "/api/products", { token, body: { sku: "P-1", name: "Demlik", category: "kitchen", priceCents: 12900, stock: 3 } });
	expect(created.status).toBe(201);
	const id = created.body.id;
	expect((await http(base, "GET", `/api/products/${id}`)).headers.get("x-cache")).toBe("MISS");
	expect(await redis.exists(`${cachePrefix(namespace)}products:entity:${id}`)).toBe(1);
	expect((await http(base, "GET", `/api/products/${id}`)).headers.get("x-cache")).toBe("HIT");

	const patched = await http(base, "PATCH", `/api/products/${id}`, { token, body: { priceCents: 9900 } });
	expect(patched.body.priceCents).toBe(9900);
	const after = await http(base, "GET", `/api/products/${id}`);
	expect(after.headers.get("x-cache")).toBe("MISS");
	expect(after.body.priceCents).toBe(9900);
});

it("serves Prometheus metrics on the gateway's port", async () => {
	const res = await fetch(`${base}/metrics`);
	expect(res.status).toBe(200);
	expect(await res.text()).toMatch(/^moleculer_request_total\{/m);
});

it("stops a node whose database cannot be reached with one line naming the masked URL", async () => {
	const node = start("broken", { ...common, SERVICES: "products", PRODUCTS_DATABASE_URL: "postgres://postgres:hunter2@127.0.0.1:1/nowhere" });
	const code = await node.exited;
	expect(code).toBe(1);
	const lines = node.output().split("\n").filter(l => l.includes("cannot be reached"));
	expect(lines).toHaveLength(1);
	expect(lines[0]).toMatch(/FATAL .*The products database at postgres:\/\/postgres:\*\*\*\*@127\.0\.0\.1:1\/nowhere cannot be reached: connect ECONNREFUSED/);
	expect(node.output()).not.toContain("hunter2");
});

it("refuses to start a distributed node without JWT_SECRET", async () => {
	const node = start("no-secret", { ...common, JWT_SECRET: "", SERVICES: "users", USERS_DATABASE_URL: dbUrl(databases.users) });
	expect(await node.exited).toBe(1);
	expect(node.output()).toContain("JWT_SECRET is required");
});
