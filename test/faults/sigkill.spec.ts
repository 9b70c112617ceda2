/**
 * A node of each service SIGKILLed during order load. Two moleculer-runner processes each run all
 * five services on PostgreSQL, Redis and RabbitMQ, and balance across each other (no preference for
 * local services), so requests of the surviving gateway are in flight on the node that dies. Clients
 * order through both gateways with an Idempotency-Key and retry a failed request (no answer, 503) on
 * the other gateway, as a client behind a load balancer would. Afterwards: stock conserved, every
 * placed order exactly one notification, no duplicate order for one key, no half-written order.
 */
import { randomBytes } from "node:crypto";
import { http, login } from "../support/http";
import { TestDatabases, pgQuery } from "../support/pg";
import { QUICK_RECOVERY_ENV, deleteProcessResources, startProcess, testPorts, waitStarted, type NodeProcess } from "../support/processes";
import { SERVERS, requireServers } from "../support/servers";
import { sleep, waitFor } from "../support/wait";
import { Tally, duplicateKeyOrders, halfWrittenOrders, load, notificationViolations, stockViolations, summary } from "../support/faults";

const namespace = `carsi-test-k${randomBytes(4).toString("hex")}`;
const dbs = new TestDatabases(["users", "products", "orders", "notifications"] as const);
const ADMIN = { email: "admin@faults-kill.test", password: "admin-password-1" };
const basePort = testPorts(10);
const gateways = [`http://127.0.0.1:${basePort}`, `http://127.0.0.1:${basePort + 1}`];
const spawned: NodeProcess[] = [];

const env = (port: number): Record<string, string> => ({
	TRANSPORTER: SERVERS.rabbitmq,
	CACHER: SERVERS.redis,
	NAMESPACE: namespace,
	JWT_SECRET: "faults-kill-secret",
	PORT: String(port),
	USERS_DATABASE_URL: dbs.urls.users,
	PRODUCTS_DATABASE_URL: dbs.urls.products,
	ORDERS_DATABASE_URL: dbs.urls.orders,
	NOTIFICATIONS_DATABASE_URL: dbs.urls.notifications,
	ADMIN_EMAIL: ADMIN.email,
	ADMIN_PASSWORD: ADMIN.password,
	...QUICK_RECOVERY_ENV,
	// Each gateway balances over both nodes' services instead of preferring its own.
	REGISTRY_PREFERLOCAL: "false",
});

beforeAll(async () => {
	await requireServers("postgres", "redis", "rabbitmq");
	await dbs.create();
	// One after the other: both migrate the same databases.
	for (const [i, name] of ["node-a", "node-b"].entries()) {
		const node = startProcess(name, env(basePort + i));
		spawned.push(node);
		await waitStarted(node);
	}
	await waitFor(
		"both gateways to see both nodes",
		async () => {
			for (const g of gateways) if ((await http(g, "GET", "/ready").catch(() => null))?.status !== 200) return false;
			return true;
		},
		30_000,
	);
}, 120_000);

afterAll(async () => {
	await Promise.all(spawned.map(n => n.stop("SIGKILL")));
	await deleteProcessResources(namespace, spawned);
	await dbs.drop();
}, 60_000);

it("keeps stock, one notification per order and one order per key when a node of each service is SIGKILLed", async () => {
	const [a] = gateways;
	const admin = await login(a, ADMIN.email, ADMIN.password);
	const initial = new Map<number, number>();
	for (let i = 0; i < 3; i++) {
		const res = await http(a, "POST", "/api/products", { token: admin, body: { sku: `FK-${i}`, name: `Halı ${i}`, category: "fk", priceCents: 900, stock: 3000 } });
		expect(res.status).toBe(201);
		initial.set(res.body.id, 3000);
	}
	const ids = [...initial.keys()];
	const customer = (await http(a, "POST", "/api/users/register", { body: { email: "fk@example.com", password: "password-123", name: "FK" } })).body.token;

	const tally = new Tally();
	const unexpected: string[] = [];
	const gaveUp: string[] = [];
	let retries = 0;
	const orders = load(6, async (w, i) => {
		const key = `fk-${w}-${i}`;
		const body = { items: [{ productId: ids[i % 3], quantity: 1 + (i % 2) }, { productId: ids[(i + 1) % 3], quantity: 1 }] };
		// Alternate gateways; a failed attempt is retried on the other one with the same key.
		for (let attempt = 0; ; attempt++) {
			const res = await tally.send(gateways[(w + i + attempt) % 2], "POST", "/api/orders", { token: customer, body, headers: { "idempotency-key": key } });
			if (res.status === 201 || res.status === 200) return;
			if (res.status !== 0 && res.status !== 503) return unexpected.push(`${res.status} ${res.text.slice(0, 200)}`);
			if (attempt === 20) return gaveUp.push(key);
			retries++;
			await sleep(200);
		}
	});
	// Reads too: they must keep answering 200 (a read lost with the node is retried on the other).
	const readTally = new Tally();
	const reads = load(2, async (w, i) => {
		const res = await readTally.send(gateways[0], "GET", `/api/products/${ids[(w + i) % 3]}`);
		if (res.status !== 200) unexpected.push(`read ${res.status} ${res.text.slice(0, 200)}`);
		await sleep(10);
	});
	await sleep(3000);
	await spawned[1].stop("SIGKILL");
	await sleep(6000);
	await Promise.all([orders.stop(), reads.stop()]);

	const placed = (await pgQuery<{ id: string }>(dbs.names.orders, "SELECT id FROM orders")).map(r => r.id);
	let missing: string[] = [];
	await waitFor("one notification per order", async () => (missing = await notificationViolations(dbs.names.notifications, placed)).length === 0, 30_000).catch(
		() => undefined,
	);
	let stock: string[] = [];
	await waitFor("the stock to settle", async () => (stock = await stockViolations(dbs.names.products, dbs.names.orders, initial)).length === 0, 15_000).catch(
		() => undefined,
	);
	const halves = await halfWrittenOrders(dbs.names.orders);
	const dupes = await duplicateKeyOrders(dbs.names.orders);
	const succeeded = (tally.byStatus.get(201) ?? 0) + (tally.byStatus.get(200) ?? 0);
	summary(`SIGKILL of the node running one of each service, under load (${retries} client retries; reads ${readTally.describe()})`, tally, {
		"only 201/200, or 503/no answer then retried": unexpected.length === 0 && gaveUp.length === 0,
		"stock conserved": stock.length === 0,
		[`${placed.length} orders, each exactly one notification`]: missing.length === 0,
		"no duplicate order for one Idempotency-Key": dupes.length === 0,
		"no half-written order": halves.length === 0,
	});
	expect(unexpected).toEqual([]);
	expect(gaveUp).toEqual([]);
	expect(stock).toEqual([]);
	expect(missing).toEqual([]);
	expect(dupes).toEqual([]);
	expect(halves).toEqual([]);
	expect(placed.length).toBe(succeeded);
	expect(readTally.statuses()).toEqual([200]);
}, 120_000);
