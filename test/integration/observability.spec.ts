/**
 * Observability in the distributed topology as users run it: one moleculer-runner process per
 * service on PostgreSQL, Redis and RabbitMQ, JSON logs at debug. One order is followed through
 * the gateway, users, orders, products, the outbox relay, RabbitMQ and notifications: its
 * requestID in the logs of every process, its trace with a span per hop (the consumer's joined
 * through the outbox row), and the business metrics each node serves on its METRICS_PORT.
 */
import { randomBytes } from "node:crypto";
import { requireServers, SERVERS } from "../support/servers";
import { startProcess, waitStarted, testPorts, type NodeProcess } from "../support/processes";
import { http } from "../support/http";
import { createDatabase, dropDatabase, pgUrl, uniqueDbName } from "../support/pg";
import { cachePrefix, deleteKeysWithPrefix } from "../support/redis";
import { channelsAmqpResources, deleteAmqpResources, deleteChannelsAmqpResources, moleculerAmqpResources } from "../support/amqp";
import { waitFor } from "../support/wait";
import { CONSUMER_GROUPS } from "../../lib/events";
import type { CollectedSpan } from "../../lib/tracing";

const namespace = `carsi-test-o${randomBytes(4).toString("hex")}`;
const databases = {
	users: uniqueDbName("users"),
	products: uniqueDbName("products"),
	orders: uniqueDbName("orders"),
	notifications: uniqueDbName("notifications"),
};
const ADMIN = { email: "admin@observability.test", password: "admin-secret-pw-1" };
const PORT = testPorts(4);
const METRICS = { products: PORT + 1, orders: PORT + 2, notifications: PORT + 3 };
const base = `http://127.0.0.1:${PORT}`;
const nodes: Record<string, NodeProcess> = {};

const common = {
	TRANSPORTER: SERVERS.rabbitmq,
	CACHER: SERVERS.redis,
	NAMESPACE: namespace,
	JWT_SECRET: "observability-test-secret",
	LOG_FORMAT: "json",
	LOG_LEVEL: "debug",
	TRACING_SAMPLE: "1",
};

/** The JSON lines a process printed (other lines, if any, are left out). */
function jsonLines(node: NodeProcess): Array<Record<string, unknown>> {
	return node
		.output()
		.split("\n")
		.filter(l => l.startsWith("{"))
		.map(l => JSON.parse(l) as Record<string, unknown>);
}

/** The value of a metric in a node's Prometheus text, on the line with `label` if given (0 when absent). */
async function sample(port: number, name: string, label = ""): Promise<number> {
	const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
	const line = text.split("\n").find(l => l.startsWith(`${name}{`) && l.includes(label));
	return line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : 0;
}

beforeAll(async () => {
	await requireServers("postgres", "redis", "rabbitmq");
	for (const db of Object.values(databases)) await createDatabase(db);
	nodes.users = startProcess("users", { ...common, SERVICES: "users", USERS_DATABASE_URL: pgUrl(databases.users), ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password });
	nodes.products = startProcess("products", { ...common, SERVICES: "products", PRODUCTS_DATABASE_URL: pgUrl(databases.products), METRICS_PORT: String(METRICS.products) });
	nodes.orders = startProcess("orders", { ...common, SERVICES: "orders", ORDERS_DATABASE_URL: pgUrl(databases.orders), METRICS_PORT: String(METRICS.orders) });
	nodes.notifications = startProcess("notifications", {
		...common,
		SERVICES: "notifications",
		NOTIFICATIONS_DATABASE_URL: pgUrl(databases.notifications),
		METRICS_PORT: String(METRICS.notifications),
	});
	nodes.api = startProcess("api", { ...common, SERVICES: "api", PORT: String(PORT) });
	await Promise.all(Object.values(nodes).map(n => waitStarted(n)));
	await waitFor("the gateway to be ready", async () => (await http(base, "GET", "/ready").catch(() => ({ status: 0 }))).status === 200, 30_000);
});

afterAll(async () => {
	const all = Object.values(nodes);
	const codes = await Promise.all(all.map(n => n.stop()));
	await Promise.all(all.map(n => n.stop("SIGKILL")));
	const nodeIDs = all.map(n => jsonLines(n).find(l => /^Node ID: /.test(String(l.msg)))?.nodeID as string).filter(Boolean);
	await deleteAmqpResources(moleculerAmqpResources(namespace, nodeIDs), namespace);
	await deleteChannelsAmqpResources(channelsAmqpResources(namespace, CONSUMER_GROUPS), namespace);
	await deleteKeysWithPrefix(cachePrefix(namespace));
	for (const db of Object.values(databases)) await dropDatabase(db);
	expect(codes).toEqual([0, 0, 0, 0, 0]);
});

it("follows one order across every node: request id in the logs, one trace with a span per hop, metrics", async () => {
	const signedIn = await http(base, "POST", "/api/users/login", { body: { email: ADMIN.email, password: ADMIN.password } });
	expect(signedIn.status).toBe(200);
	const token: string = signedIn.body.token;
	const product = await http(base, "POST", "/api/products", { token, body: { sku: "OBS-1", name: "Cezve", category: "kitchen", priceCents: 4500, stock: 1 } });
	expect(product.status).toBe(201);
	await http(base, "GET", `/api/products/${product.body.id}`);
	await http(base, "GET", `/api/products/${product.body.id}`);

	const placedBefore = await sample(METRICS.orders, "carsi_orders_placed");
	const refusedBefore = await sample(METRICS.orders, "carsi_orders_refused", 'reason="OUT_OF_STOCK"');
	const lagBefore = await sample(METRICS.notifications, "carsi_notifications_lag_count");

	const order = await http(base, "POST", "/api/orders", { token, body: { items: [{ productId: product.body.id, quantity: 1 }] } });
	expect(order.status).toBe(201);
	const requestID = order.headers.get("x-request-id")!;
	expect(requestID).toMatch(/^[0-9a-f-]{36}$/);
	// The stock is gone: a second order is refused.
	expect((await http(base, "POST", "/api/orders", { token, body: { items: [{ productId: product.body.id, quantity: 1 }] } })).status).toBe(409);

	// The trace, as the gateway's collector has it once every node has sent its spans.
	let spans: CollectedSpan[] = [];
	const named = (name: string) => spans.find(s => s.name === name);
	const consumer = () => spans.find(s => s.name === `channel '${namespace}.order.created'` && s.service === "notifications");
	// Each node sends its spans on its own one-second timer: wait for every hop, not only the last.
	const hops = ["POST /api/orders", "action 'orders.create'", "action 'products.reserve'", "outbox publish 'order.created'"];
	await waitFor(
		"the order's trace to hold a span of every hop",
		async () => {
			const res = await http(base, "GET", `/api/admin/traces/${requestID}`, { token });
			spans = res.status === 200 ? res.body.spans : [];
			return consumer() !== undefined && hops.every(h => named(h) !== undefined);
		},
		20_000,
		200,
	);
	const root = named("POST /api/orders")!;
	const create = named("action 'orders.create'")!;
	const reserve = named("action 'products.reserve'")!;
	const publish = named("outbox publish 'order.created'")!;
	const consumed = consumer()!;
	expect([root, create, reserve, publish, consumed].every(Boolean)).toBe(true);
	expect(root.parentId).toBeNull();
	expect(create.parentId).toBe(root.id);
	expect(reserve.parentId).toBe(create.id);
	expect(publish.parentId).toBe(create.id);
	expect(consumed.parentId).toBe(publish.id);
	expect(spans.every(s => s.traceId === requestID)).toBe(true);
	// Each hop on the node that ran it.
	const nodeOf = (name: string) => jsonLines(nodes[name]).find(l => l.nodeID)?.nodeID;
	expect([root.nodeId, create.nodeId, reserve.nodeId, consumed.nodeId]).toEqual([nodeOf("api"), nodeOf("orders"), nodeOf("products"), nodeOf("notifications")]);
	expect(publish.nodeId).toBe(nodeOf("orders"));
	// Newest first in the list, named by the root span.
	const list = await http(base, "GET", "/api/admin/traces?limit=5", { token });
	expect(list.body.items.find((t: { traceId: string }) => t.traceId === requestID)).toMatchObject({ name: "POST /api/orders", spans: spans.length });

	// The request's id in the logs of every service it crossed. Not users: the gateway remembers
	// the token users accepted for the product's creation (services/api/token-cache.ts), so the
	// login's own request is the one that shows users' lines.
	expect(named("action 'users.resolveToken'")).toBeUndefined();
	for (const name of ["api", "orders", "products", "notifications"]) {
		const lines = jsonLines(nodes[name]).filter(l => l.requestID === requestID);
		expect({ name, lines: lines.length > 0 }).toEqual({ name, lines: true });
	}
	const loginID = signedIn.headers.get("x-request-id");
	expect(jsonLines(nodes.users).some(l => l.requestID === loginID)).toBe(true);
	expect(jsonLines(nodes.notifications).some(l => l.requestID === requestID && /Notification for user/.test(String(l.msg)))).toBe(true);

	// Nothing secret in any log: not the admin's password, not a token.
	for (const node of Object.values(nodes)) {
		expect(node.output()).not.toContain(ADMIN.password);
		expect(node.output()).not.toContain(token);
	}

	// The business metrics moved, each on the node that does the work.
	expect(await sample(METRICS.orders, "carsi_orders_placed")).toBe(placedBefore + 1);
	expect(await sample(METRICS.orders, "carsi_orders_refused", 'reason="OUT_OF_STOCK"')).toBe(refusedBefore + 1);
	expect(await sample(METRICS.products, "carsi_cache_hits", 'action="products.get"')).toBeGreaterThanOrEqual(1);
	expect(await sample(METRICS.products, "carsi_cache_misses", 'action="products.get"')).toBeGreaterThanOrEqual(1);
	await waitFor("the notification's lag to be observed", async () => (await sample(METRICS.notifications, "carsi_notifications_lag_count")) === lagBefore + 1);
	await waitFor("the outbox gauges", async () => (await http(`http://127.0.0.1:${METRICS.orders}`, "GET", "/metrics")).text.includes('carsi_outbox_backlog{namespace="'));
	expect(await sample(METRICS.orders, "carsi_outbox_backlog")).toBe(0);
	await waitFor("the dead-letter gauge", async () => (await http(`http://127.0.0.1:${METRICS.notifications}`, "GET", "/metrics")).text.includes('group="notifications"'));
	expect(await sample(METRICS.notifications, "carsi_dlq_depth", 'group="notifications"')).toBe(0);
});

it("answers /ready on a node's METRICS_PORT with that node's own dependencies", async () => {
	const ready = await http(`http://127.0.0.1:${METRICS.orders}`, "GET", "/ready");
	expect(ready.status).toBe(200);
	expect(ready.body.checks).toEqual({ "database:orders": "up", cacher: "up", transporter: "up", events: "up" });
	expect((await http(`http://127.0.0.1:${METRICS.products}`, "GET", "/health")).status).toBe(200);
});
