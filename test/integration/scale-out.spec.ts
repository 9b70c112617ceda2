/**
 * Scale-out on the AMQP transporter: two products and two orders nodes behind one gateway, each
 * its own process. Requests are balanced across both (each node's own /metrics says so), an update
 * through one never leaves a stale read on the other, and SIGKILL of one products node during a
 * steady load loses no request (the retry policy of moleculer.config.ts and its short heartbeat).
 */
import { randomBytes } from "node:crypto";
import { requireServers, SERVERS } from "../support/servers";
import { startProcess, waitStarted, testPorts, type NodeProcess } from "../support/processes";
import { http, login } from "../support/http";
import { TestDatabases } from "../support/pg";
import { cachePrefix, deleteKeysWithPrefix } from "../support/redis";
import { channelsAmqpResources, deleteAmqpResources, deleteChannelsAmqpResources, moleculerAmqpResources } from "../support/amqp";
import { waitFor, sleep } from "../support/wait";
import { CONSUMER_GROUPS } from "../../lib/events";

const namespace = `carsi-test-s${randomBytes(4).toString("hex")}`;
const dbs = new TestDatabases(["users", "products", "orders", "notifications"] as const);
const ADMIN = { email: "admin@scale.test", password: "admin-password-1" };
const basePort = testPorts(10);
const base = `http://127.0.0.1:${basePort}`;
const nodes: Record<string, NodeProcess> = {};

const common = { TRANSPORTER: SERVERS.rabbitmq, CACHER: SERVERS.redis, NAMESPACE: namespace, JWT_SECRET: "scale-test-secret" };
const layout: Record<string, Record<string, string>> = {
	users: { SERVICES: "users", USERS_DATABASE_URL: dbs.urls.users, ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password },
	notifications: { SERVICES: "notifications", NOTIFICATIONS_DATABASE_URL: dbs.urls.notifications },
	"products-1": { SERVICES: "products", PRODUCTS_DATABASE_URL: dbs.urls.products, METRICS_PORT: String(basePort + 1) },
	"products-2": { SERVICES: "products", PRODUCTS_DATABASE_URL: dbs.urls.products, METRICS_PORT: String(basePort + 2) },
	"orders-1": { SERVICES: "orders", ORDERS_DATABASE_URL: dbs.urls.orders, METRICS_PORT: String(basePort + 3) },
	"orders-2": { SERVICES: "orders", ORDERS_DATABASE_URL: dbs.urls.orders, METRICS_PORT: String(basePort + 4) },
	api: { SERVICES: "api", PORT: String(basePort) },
};

/** How many calls of `action` this node handled, from its own Prometheus endpoint. */
async function handled(metricsPort: string, action: string): Promise<number> {
	const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
	return text
		.split("\n")
		.filter(l => l.startsWith("moleculer_request_total{") && l.includes(`action="${action}"`) && l.includes('caller="api"'))
		.reduce((sum, l) => sum + Number(l.split(" ").pop()), 0);
}

let admin: string;
let customer: string;

beforeAll(async () => {
	await requireServers("postgres", "redis", "rabbitmq");
	await dbs.create();
	// The products nodes first, one after the other: both migrate the one products database.
	for (const name of ["users", "notifications", "products-1", "products-2", "orders-1", "orders-2", "api"]) {
		nodes[name] = startProcess(name, { ...common, ...layout[name] });
		if (name.startsWith("products") || name.startsWith("orders")) await waitStarted(nodes[name]);
	}
	await Promise.all(Object.values(nodes).map(n => waitStarted(n)));
	await waitFor("the gateway to be ready", async () => (await http(base, "GET", "/ready").catch(() => null))?.status === 200, 30_000);
	admin = await login(base, ADMIN.email, ADMIN.password);
	customer = (await http(base, "POST", "/api/users/register", { body: { email: "s@example.com", password: "password-123", name: "S" } })).body.token;
}, 120_000);

afterAll(async () => {
	await Promise.all(Object.values(nodes).map(n => n.stop()));
	const nodeIDs = Object.values(nodes)
		.map(n => /Node ID: (\S+)/.exec(n.output())?.[1])
		.filter((id): id is string => !!id);
	await deleteAmqpResources(moleculerAmqpResources(namespace, nodeIDs), namespace);
	await deleteChannelsAmqpResources(channelsAmqpResources(namespace, CONSUMER_GROUPS), namespace);
	await deleteKeysWithPrefix(cachePrefix(namespace));
	await dbs.drop();
}, 60_000);

let productIds: number[] = [];

it("balances reads and orders across both nodes of each service", async () => {
	for (let i = 0; i < 5; i++) {
		const res = await http(base, "POST", "/api/products", { token: admin, body: { sku: `S-${i}`, name: `Item ${i}`, category: "s", priceCents: 100, stock: 1000 } });
		productIds.push(res.body.id);
	}
	for (let i = 0; i < 40; i++) expect((await http(base, "GET", `/api/products/${productIds[i % 5]}`)).status).toBe(200);
	for (let i = 0; i < 10; i++)
		expect((await http(base, "POST", "/api/orders", { token: customer, body: { items: [{ productId: productIds[0], quantity: 1 }] } })).status).toBe(201);
	const reads = [await handled(layout["products-1"].METRICS_PORT, "products.get"), await handled(layout["products-2"].METRICS_PORT, "products.get")];
	const orders = [await handled(layout["orders-1"].METRICS_PORT, "orders.create"), await handled(layout["orders-2"].METRICS_PORT, "orders.create")];
	console.log(`scale-out balance: products.get per node ${reads.join(" / ")}, orders.create per node ${orders.join(" / ")}`);
	expect(reads.every(n => n > 0)).toBe(true);
	expect(reads[0] + reads[1]).toBe(40);
	expect(orders.every(n => n > 0)).toBe(true);
	expect(orders[0] + orders[1]).toBe(10);
}, 60_000);

it("never serves a stale product after an update, whichever node took it", async () => {
	const id = productIds[1];
	for (let i = 1; i <= 10; i++) {
		await http(base, "GET", `/api/products/${id}`);
		await http(base, "GET", `/api/products/${id}`);
		expect((await http(base, "PATCH", `/api/products/${id}`, { token: admin, body: { priceCents: 100 + i } })).status).toBe(200);
		for (let r = 0; r < 4; r++) expect((await http(base, "GET", `/api/products/${id}`)).body.priceCents).toBe(100 + i);
	}
}, 60_000);

it("loses no request when a products node is SIGKILLed during a steady load", async () => {
	const statuses = new Map<number, number>();
	let requests = 0;
	let slowest = 0;
	let stop = false;
	const worker = async (w: number) => {
		for (let i = 0; !stop; i++) {
			const started = Date.now();
			const path = i % 5 === 0 ? "/api/products?category=s&pageSize=5" : `/api/products/${productIds[(w + i) % productIds.length]}`;
			const res = await http(base, "GET", path).catch(() => ({ status: 0 }));
			requests++;
			slowest = Math.max(slowest, Date.now() - started);
			statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
		}
	};
	const load = Promise.all(Array.from({ length: 8 }, (_, w) => worker(w)));
	await sleep(2000);
	await nodes["products-2"].stop("SIGKILL");
	// Long enough for the heartbeat to give the node up and the retried reads to land.
	await sleep(12_000);
	stop = true;
	await load;
	const summary = [...statuses.entries()].map(([s, n]) => `${s}: ${n}`).join(", ");
	console.log(`scale-out SIGKILL of products-2 under load: ${requests} requests, by status { ${summary} }, slowest ${slowest} ms`);
	expect([...statuses.keys()]).toEqual([200]);
	expect(requests).toBeGreaterThan(100);
}, 60_000);
