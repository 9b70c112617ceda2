/**
 * Orders and stock on PostgreSQL: the same rules as on SQLite under real concurrency, and the
 * reservation sweeper that gives back stock no order confirmed.
 */
import { randomUUID } from "node:crypto";
import type { ServiceBroker } from "moleculer";
import { createNode, gatewayUrl } from "../support/broker";
import { http, login } from "../support/http";
import { requireServers } from "../support/servers";
import { pgQuery, TestDatabases } from "../support/pg";

const ADMIN = { email: "admin@orders-pg.test", password: "admin-password-1" };
const dbs = new TestDatabases(["users", "products", "orders"] as const);
let broker: ServiceBroker;
let base: string;
let admin: string;
let customer: string;

beforeAll(async () => {
	await requireServers("postgres");
	await dbs.create();
	broker = createNode({
		services: ["api", "users", "products", "orders"],
		databaseUrls: dbs.urls,
		// The sweeper is driven by the tests (sweepReservations), with a short hold.
		settings: { users: { admin: ADMIN }, products: { reservationSweepMs: 0, reservationTtlMs: 1000, reservationGraceMs: 0 } },
	});
	await broker.start();
	base = gatewayUrl(broker);
	admin = await login(base, ADMIN.email, ADMIN.password);
	customer = (await http(base, "POST", "/api/users/register", { body: { email: "c@example.com", password: "password-123", name: "C" } })).body.token;
});

afterAll(async () => {
	await broker?.stop();
	await dbs.drop();
});

let skus = 0;
async function product(stock: number) {
	const res = await http(base, "POST", "/api/products", { token: admin, body: { sku: `PG-${++skus}`, name: `Thing ${skus}`, category: "things", priceCents: 500, stock } });
	return res.body.id as number;
}
const stockOf = async (id: number) => (await pgQuery<{ stock: number }>(dbs.names.products, "SELECT stock FROM products WHERE id = $1", [id]))[0].stock;
const order = (items: unknown, headers: Record<string, string> = {}) => http(base, "POST", "/api/orders", { token: customer, body: { items }, headers });
const products = () => broker.getLocalService("products") as unknown as { sweepReservations(): Promise<number> };

it("places exactly 30 of 100 concurrent single-unit orders against stock 30, with no 5xx", async () => {
	const id = await product(30);
	const results = await Promise.all(Array.from({ length: 100 }, () => order([{ productId: id, quantity: 1 }])));
	const statuses = results.map(r => r.status);
	expect(statuses.filter(s => s === 201)).toHaveLength(30);
	expect(statuses.filter(s => s === 409)).toHaveLength(70);
	expect(await stockOf(id)).toBe(0);
	const [{ n }] = await pgQuery<{ n: string }>(dbs.names.orders, "SELECT count(*) AS n FROM orders WHERE items LIKE $1", [`%"productId":${id},%`]);
	expect(Number(n)).toBe(30);
});

it("conserves stock through orders, cancels and a double-clicked key: initial = on hand + held", async () => {
	const id = await product(20);
	const placed = await Promise.all([1, 2, 3, 4].map(q => order([{ productId: id, quantity: q }])));
	await Promise.all([1, 2].map(() => order([{ productId: id, quantity: 2 }], { "Idempotency-Key": "pg-key" })));
	await Promise.all([0, 0, 2].map(i => http(base, "POST", `/api/orders/${placed[i].body.id}/cancel`, { token: customer })));
	const held = await pgQuery<{ lines: string }>(dbs.names.products, "SELECT lines FROM reservations WHERE status <> 'released'");
	const heldOfProduct = held.flatMap(r => JSON.parse(r.lines) as Array<{ productId: number; quantity: number }>).filter(l => l.productId === id).reduce((s, l) => s + l.quantity, 0);
	// Placed and not cancelled: 2 + 4 + 2 (one keyed order).
	expect(heldOfProduct).toBe(8);
	expect((await stockOf(id)) + heldOfProduct).toBe(20);
});

it("releases a reservation whose order was never written, once it is past its time", async () => {
	const id = await product(10);
	const orphan = randomUUID();
	await broker.call("products.reserve", { orderId: orphan, items: [{ productId: id, quantity: 4 }] });
	expect(await stockOf(id)).toBe(6);
	// Not yet due: nothing is released.
	await products().sweepReservations();
	expect(await stockOf(id)).toBe(6);
	await new Promise(r => setTimeout(r, 1100));
	expect(await products().sweepReservations()).toBeGreaterThanOrEqual(1);
	expect(await stockOf(id)).toBe(10);
	// Released once: a late release or sweep gives nothing more back.
	await broker.call("products.release", { orderId: orphan });
	await products().sweepReservations();
	expect(await stockOf(id)).toBe(10);
});

it("confirms, never releases, a reservation whose order was committed", async () => {
	const id = await product(10);
	const res = await order([{ productId: id, quantity: 3 }]);
	// Undo the confirmation the order made, as if that call had been lost.
	await pgQuery(dbs.names.products, "UPDATE reservations SET status = 'held' WHERE order_id = $1", [res.body.id]);
	await new Promise(r => setTimeout(r, 1100));
	await products().sweepReservations();
	expect(await stockOf(id)).toBe(7);
	const [row] = await pgQuery<{ status: string }>(dbs.names.products, "SELECT status FROM reservations WHERE order_id = $1", [res.body.id]);
	expect(row.status).toBe("confirmed");
});

it("reserves once for one order id however often reserve is called at once", async () => {
	const id = await product(10);
	const orderId = randomUUID();
	await Promise.all(Array.from({ length: 10 }, () => broker.call("products.reserve", { orderId, items: [{ productId: id, quantity: 2 }] })));
	expect(await stockOf(id)).toBe(8);
});

it("writes an order and its order.created together, once for 10 concurrent requests with one key", async () => {
	const id = await product(10);
	const results = await Promise.all(Array.from({ length: 10 }, () => order([{ productId: id, quantity: 1 }], { "Idempotency-Key": "pg-once" })));
	expect(results.map(r => r.status).sort()).toEqual([200, 200, 200, 200, 200, 200, 200, 200, 200, 201]);
	const orderId = results[0].body.id as string;
	expect(new Set(results.map(r => r.body.id))).toEqual(new Set([orderId]));
	const events = await pgQuery<{ event: string; payload: string }>(dbs.names.orders, "SELECT event, payload FROM outbox WHERE payload LIKE $1", [`%${orderId}%`]);
	expect(events.map(e => e.event)).toEqual(["order.created"]);
	const [row] = await pgQuery<{ created_at: Date }>(dbs.names.orders, "SELECT created_at FROM orders WHERE id = $1", [orderId]);
	expect((JSON.parse(events[0].payload) as { order: { createdAt: string } }).order.createdAt).toBe(row.created_at.toISOString());
	expect(await stockOf(id)).toBe(9);
});
