/**
 * The orders database cut under order load (a TCP proxy in front of its PostgreSQL): each order
 * answers 201 or 503, never a 500; no order is half-written (every order has its order.created in
 * the outbox, and the reverse); the stock held for orders that could not be written comes back; a
 * client that retries a 503 with its Idempotency-Key gets one order, never two.
 */
import type { ServiceBroker } from "moleculer";
import { createNode, gatewayUrl, uniqueId } from "../support/broker";
import { http, login } from "../support/http";
import { TestDatabases, pgQuery, pgUrl } from "../support/pg";
import { SERVERS, requireServers } from "../support/servers";
import { TcpProxy } from "../support/tcp-proxy";
import { sleep, waitFor } from "../support/wait";
import { Tally, duplicateKeyOrders, halfWrittenOrders, load, stockViolations, summary } from "../support/faults";

const ADMIN = { email: "admin@faults-orders.test", password: "admin-password-1" };
const dbs = new TestDatabases(["users", "products", "orders"] as const);
let proxy: TcpProxy | undefined;
let broker: ServiceBroker | undefined;
let base: string;
let serversUp = false;

beforeAll(async () => {
	await requireServers("postgres");
	serversUp = true;
	await dbs.create();
	const pg = new URL(SERVERS.postgres);
	proxy = await TcpProxy.start({ host: pg.hostname, port: Number(pg.port || 5432) });
	const ordersViaProxy = new URL(pgUrl(dbs.names.orders));
	ordersViaProxy.port = String(proxy.port);
	broker = createNode({
		services: ["api", "users", "products", "orders"],
		namespace: uniqueId("fo"),
		databaseUrls: { ...dbs.urls, orders: ordersViaProxy.toString() },
		settings: {
			users: { admin: ADMIN },
			// Stock held for an order that was never written comes back within about 2 s.
			products: { reservationTtlMs: 1000, reservationSweepMs: 200, reservationGraceMs: 500 },
		},
	});
	await broker.start();
	base = gatewayUrl(broker);
});

afterAll(async () => {
	if (!serversUp) return;
	proxy?.restore();
	await broker?.stop();
	await proxy?.close();
	await dbs.drop();
});

it("answers 201 or 503 while the orders database is cut, writes no half order, and gives the stock back", async () => {
	const admin = await login(base, ADMIN.email, ADMIN.password);
	const initial = new Map<number, number>();
	for (let i = 0; i < 3; i++) {
		const res = await http(base, "POST", "/api/products", { token: admin, body: { sku: `FO-${i}`, name: `Çay ${i}`, category: "fo", priceCents: 500, stock: 10_000 } });
		initial.set(res.body.id, 10_000);
	}
	const ids = [...initial.keys()];
	const customers: string[] = [];
	for (let c = 0; c < 3; c++)
		customers.push((await http(base, "POST", "/api/users/register", { body: { email: `fo${c}@example.com`, password: "password-123", name: `C${c}` } })).body.token);

	const tally = new Tally();
	const refused: Array<{ customer: number; key: string; body: unknown }> = [];
	const unexpected: string[] = [];
	const orders = load(6, async (w, i) => {
		const customer = w % customers.length;
		const key = `fo-${w}-${i}`;
		const body = { items: [{ productId: ids[i % ids.length], quantity: 1 + (i % 3) }, { productId: ids[(i + 1) % ids.length], quantity: 1 }] };
		const res = await tally.send(base, "POST", "/api/orders", { token: customers[customer], body, headers: { "idempotency-key": key } });
		if (res.status === 503) {
			refused.push({ customer, key, body });
			await sleep(50); // a client backs off after a 503
		} else if (res.status !== 201) unexpected.push(`${res.status} ${res.text.slice(0, 200)}`);
		if (/"stack"|\n\s+at /.test(res.text)) unexpected.push(`a stack trace: ${res.text.slice(0, 200)}`);
	});
	await sleep(1500);
	proxy!.cut();
	await sleep(3000);
	const duringCut = tally.byStatus.get(503) ?? 0;
	proxy!.restore();
	await waitFor("the orders database to answer again", async () => (await http(base, "GET", "/ready")).body.checks["database:orders"] === "up");
	await sleep(1000);
	await orders.stop();

	// The clients retry what was refused, with the same key and body: one order each, 200 or 201.
	const retried = new Tally();
	for (let k = 0; k < refused.length; k += 10)
		await Promise.all(
			refused.slice(k, k + 10).map(async r => {
				const res = await retried.send(base, "POST", "/api/orders", { token: customers[r.customer], body: r.body, headers: { "idempotency-key": r.key } });
				if (res.status !== 201 && res.status !== 200) unexpected.push(`retry of ${r.key}: ${res.status} ${res.text.slice(0, 200)}`);
			}),
		);
	// Stock held for orders that were never written is swept back.
	let stock: string[] = [];
	await waitFor(
		"the stock of unwritten orders to come back",
		async () => (stock = await stockViolations(dbs.names.products, dbs.names.orders, initial)).length === 0,
		15_000,
	).catch(() => undefined);
	const halves = await halfWrittenOrders(dbs.names.orders);
	const dupes = await duplicateKeyOrders(dbs.names.orders);
	const answered = Number((await pgQuery<{ n: string }>(dbs.names.orders, "SELECT count(*) AS n FROM orders"))[0].n);
	summary("orders database cut for 3 s during order load", tally, {
		"only 201 and 503, no stack trace": unexpected.length === 0 && tally.statuses().every(s => s === 201 || s === 503),
		"no half-written order": halves.length === 0,
		"stock conserved after the sweep": stock.length === 0,
		[`${refused.length} refused orders retried with their key, one order each (${retried.describe()})`]: dupes.length === 0,
	});
	expect(unexpected).toEqual([]);
	expect(duringCut).toBeGreaterThan(0);
	expect(tally.byStatus.get(201) ?? 0).toBeGreaterThan(0);
	expect(halves).toEqual([]);
	expect(stock).toEqual([]);
	expect(dupes).toEqual([]);
	// Every request ended in exactly one order: the 201s of the load plus the retried 503s.
	expect(answered).toBe((tally.byStatus.get(201) ?? 0) + refused.length);
}, 60_000);
