/**
 * Orders and notifications as separate processes on PostgreSQL, Redis and RabbitMQ: a stopped
 * or crashing notifications service never fails an order and never loses its notification, and a
 * node killed at the worst moment loses neither the event nor the stock.
 */
import { randomBytes } from "node:crypto";
import { requireServers, SERVERS } from "../support/servers";
import { QUICK_RECOVERY_ENV, deleteProcessResources, startProcess, waitStarted, testPorts, type NodeProcess } from "../support/processes";
import { http, login } from "../support/http";
import { pgQuery, TestDatabases } from "../support/pg";
import { waitFor } from "../support/wait";

const namespace = `carsi-test-d${randomBytes(4).toString("hex")}`;
const dbs = new TestDatabases(["users", "products", "orders", "notifications"] as const);
const ADMIN = { email: "admin@delivery.test", password: "admin-password-1" };
const PORT = testPorts();
const base = `http://127.0.0.1:${PORT}`;
const spawned: NodeProcess[] = [];
const running = new Map<string, NodeProcess>();

const common = {
	TRANSPORTER: SERVERS.rabbitmq,
	CACHER: SERVERS.redis,
	NAMESPACE: namespace,
	JWT_SECRET: "delivery-test-secret",
	// A killed node is forgotten after 3 s, so no request is routed to it in the next test.
	...QUICK_RECOVERY_ENV,
};
const env: Record<string, Record<string, string>> = {
	users: { SERVICES: "users", USERS_DATABASE_URL: dbs.urls.users, ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password },
	products: { SERVICES: "products", PRODUCTS_DATABASE_URL: dbs.urls.products },
	orders: { SERVICES: "orders", ORDERS_DATABASE_URL: dbs.urls.orders },
	notifications: { SERVICES: "notifications", NOTIFICATIONS_DATABASE_URL: dbs.urls.notifications },
	api: { SERVICES: "api", PORT: String(PORT) },
};

async function start(service: string, extra: Record<string, string> = {}): Promise<NodeProcess> {
	const node = startProcess(service, { ...common, ...env[service], ...extra });
	spawned.push(node);
	running.set(service, node);
	await waitStarted(node);
	// Started is not yet known to the gateway: wait until it routes to the new node.
	if (service !== "api" && running.has("api"))
		await waitFor(`the gateway to see ${service}`, async () => (await http(base, "GET", "/ready").catch(() => null))?.body?.checks?.[`service:${service}`] === "up");
	return node;
}

async function stop(service: string, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
	await running.get(service)?.stop(signal);
	running.delete(service);
}

let admin: string;
let customer: string;
let customerId: number;

beforeAll(async () => {
	await requireServers("postgres", "redis", "rabbitmq");
	await dbs.create();
	// notifications is not started: its queues must still hold every event (declared by producers).
	await Promise.all(["users", "products", "orders", "api"].map(s => start(s)));
	await waitFor("the gateway to route to every service but notifications", async () => {
		const ready = await http(base, "GET", "/ready").catch(() => null);
		return !!ready && ["users", "products", "orders"].every(s => ready.body.checks[`service:${s}`] === "up");
	});
	admin = await login(base, ADMIN.email, ADMIN.password);
	const reg = await http(base, "POST", "/api/users/register", { body: { email: "buyer@example.com", password: "password-123", name: "Buyer" } });
	customer = reg.body.token;
	customerId = reg.body.user.id;
}, 120_000);

afterAll(async () => {
	await Promise.all([...running.keys()].map(s => stop(s)));
	await Promise.all(spawned.map(n => n.stop("SIGKILL")));
	await deleteProcessResources(namespace, spawned);
	await dbs.drop();
}, 60_000);

let skus = 0;
async function product(stock: number): Promise<number> {
	const res = await http(base, "POST", "/api/products", { token: admin, body: { sku: `D-${++skus}`, name: `Item ${skus}`, category: "d", priceCents: 100, stock } });
	expect(res.status).toBe(201);
	return res.body.id;
}
const stockOf = async (id: number) => (await pgQuery<{ stock: number }>(dbs.names.products, "SELECT stock FROM products WHERE id = $1", [id]))[0].stock;
const notificationsOf = (orderIds: string[]) =>
	pgQuery<{ order_id: string; type: string; n: string }>(
		dbs.names.notifications,
		"SELECT order_id, type, count(*) AS n FROM notifications WHERE order_id = ANY($1) GROUP BY order_id, type",
		[orderIds],
	);

it("places 50 orders while notifications has never run, then notifies each once when it starts", async () => {
	const id = await product(100);
	const results = await Promise.all(Array.from({ length: 50 }, () => http(base, "POST", "/api/orders", { token: customer, body: { items: [{ productId: id, quantity: 1 }] } })));
	expect(results.map(r => r.status)).toEqual(Array(50).fill(201));
	const orderIds = results.map(r => r.body.id as string);
	// Every event is confirmed into the notifications queue before anyone consumes it.
	await waitFor("the outbox to drain", async () => (await pgQuery(dbs.names.orders, "SELECT 1 FROM outbox WHERE sent_at IS NULL")).length === 0);

	await start("notifications");
	await waitFor("50 notifications", async () => (await notificationsOf(orderIds)).length === 50, 60_000);
	const rows = await notificationsOf(orderIds);
	expect(rows.every(r => r.type === "order.created" && Number(r.n) === 1)).toBe(true);

	const api = await http(base, "GET", "/api/notifications?pageSize=100", { token: customer });
	expect(api.status).toBe(200);
	expect(api.body.rows.filter((n: { type: string }) => n.type === "order.created")).toHaveLength(50);
	expect(api.body.rows.every((n: { userId: number }) => n.userId === customerId)).toBe(true);
}, 120_000);

it("publishes an order's event after a restart when its node was killed between commit and publish", async () => {
	const id = await product(5);
	await stop("orders");
	await start("orders", { CARSI_FAULT: "orders.after-commit" });
	const res = await http(base, "POST", "/api/orders", { token: customer, body: { items: [{ productId: id, quantity: 1 }] } });
	// The node died before answering: the client is told the service is unavailable, not a 500.
	expect(res.status).toBe(503);
	// The order was committed with its event, which was never published.
	const [committed] = await pgQuery<{ id: string }>(dbs.names.orders, "SELECT id FROM orders WHERE items LIKE $1", [`%"productId":${id},%`]);
	expect(committed).toBeDefined();
	const pending = await pgQuery(dbs.names.orders, "SELECT 1 FROM outbox WHERE sent_at IS NULL AND payload LIKE $1", [`%${committed.id}%`]);
	expect(pending).toHaveLength(1);

	running.delete("orders");
	await start("orders");
	await waitFor("the notification of the order that survived the crash", async () => (await notificationsOf([committed.id])).length === 1, 60_000);
	expect(await stockOf(id)).toBe(4);
}, 120_000);

it("gives the stock back when the orders node was killed between reserve and commit", async () => {
	const id = await product(5);
	await stop("orders");
	await start("orders", { CARSI_FAULT: "orders.after-reserve" });
	const res = await http(base, "POST", "/api/orders", { token: customer, body: { items: [{ productId: id, quantity: 2 }] } });
	expect(res.status).toBe(503);
	expect(await stockOf(id)).toBe(3);

	running.delete("orders");
	await start("orders");
	// The hold runs out; the sweeper asks orders, which never wrote the order: the stock comes back.
	await waitFor("the held stock to come back", async () => (await stockOf(id)) === 5, 30_000);
	expect(await pgQuery(dbs.names.orders, "SELECT 1 FROM orders WHERE items LIKE $1", [`%"productId":${id},%`])).toHaveLength(0);
}, 120_000);

it("notifies a cancellation once and releases its stock once", async () => {
	const id = await product(5);
	const placed = await http(base, "POST", "/api/orders", { token: customer, body: { items: [{ productId: id, quantity: 2 }] } });
	const cancels = await Promise.all([1, 2].map(() => http(base, "POST", `/api/orders/${placed.body.id}/cancel`, { token: customer })));
	expect(cancels.map(r => r.status).sort()).toEqual([200, 409]);
	await waitFor("the cancellation notice", async () => (await notificationsOf([placed.body.id])).some(r => r.type === "order.cancelled"), 30_000);
	const rows = await notificationsOf([placed.body.id]);
	expect(rows.map(r => [r.type, Number(r.n)]).sort()).toEqual([
		["order.cancelled", 1],
		["order.created", 1],
	]);
	expect(await stockOf(id)).toBe(5);
}, 60_000);
