/**
 * Orders on the embedded default, through the gateway: atomic stock, prices from the catalog,
 * Idempotency-Key, ownership, cancel releasing stock exactly once, the outbox written with the order.
 */
import type { ServiceBroker } from "moleculer";
import { createNode, gatewayUrl, sqliteUrls, tempDir } from "../support/broker";
import { http, login } from "../support/http";
import { createSequelize } from "../../mixins/db.mixin";

const ADMIN = { email: "admin@orders.test", password: "admin-password-1" };
const SERVICES = ["api", "users", "products", "orders"];
let broker: ServiceBroker;
let base: string;
let tmp: ReturnType<typeof tempDir>;
let admin: string;
let alice: string;
let bob: string;

beforeAll(async () => {
	tmp = tempDir();
	broker = createNode({
		services: SERVICES,
		databaseUrls: sqliteUrls(tmp.dir, ["users", "products", "orders"]),
		settings: { users: { admin: ADMIN }, products: { reservationSweepMs: 0 } },
	});
	await broker.start();
	base = gatewayUrl(broker);
	admin = await login(base, ADMIN.email, ADMIN.password);
	alice = (await http(base, "POST", "/api/users/register", { body: { email: "alice@example.com", password: "password-123", name: "Alice" } })).body.token;
	bob = (await http(base, "POST", "/api/users/register", { body: { email: "bob@example.com", password: "password-123", name: "Bob" } })).body.token;
});

afterAll(async () => {
	await broker.stop();
	tmp.remove();
});

let skus = 0;
async function product(stock: number, priceCents = 1000, currency = "TRY") {
	const res = await http(base, "POST", "/api/products", { token: admin, body: { sku: `O-${++skus}`, name: `Thing ${skus}`, category: "things", priceCents, stock, currency } });
	expect(res.status).toBe(201);
	return res.body as { id: number; sku: string; name: string };
}
const stockOf = async (id: number) => (await http(base, "GET", `/api/products/${id}`)).body.stock as number;
const order = (token: string, items: unknown, headers: Record<string, string> = {}) => http(base, "POST", "/api/orders", { token, body: { items }, headers });

async function outboxEvents(): Promise<Array<{ event: string; payload: any }>> {
	const db = createSequelize(sqliteUrls(tmp.dir, ["orders"]).orders);
	const [rows] = await db.query("SELECT event, payload FROM outbox ORDER BY created_at");
	await db.close();
	return (rows as Array<{ event: string; payload: string }>).map(r => ({ event: r.event, payload: JSON.parse(r.payload) }));
}

it("places an order priced by the catalog, takes the stock and writes order.created with it", async () => {
	const a = await product(5, 1250);
	const b = await product(5, 399);
	const res = await order(alice, [{ productId: a.id, quantity: 2 }, { productId: b.id, quantity: 1 }]);
	expect(res.status).toBe(201);
	expect(res.headers.get("location")).toBe(`/api/orders/${res.body.id}`);
	expect(res.body).toMatchObject({
		status: "placed",
		totalCents: 2 * 1250 + 399,
		currency: "TRY",
		items: [
			{ productId: a.id, sku: a.sku, name: a.name, quantity: 2, unitPriceCents: 1250 },
			{ productId: b.id, sku: b.sku, name: b.name, quantity: 1, unitPriceCents: 399 },
		],
	});
	expect(await stockOf(a.id)).toBe(3);
	expect(await stockOf(b.id)).toBe(4);
	const created = (await outboxEvents()).filter(e => e.event === "order.created" && e.payload.order.id === res.body.id);
	expect(created).toHaveLength(1);
	expect(created[0].payload).toEqual({ eventId: expect.any(String), occurredAt: expect.any(String), order: res.body });
});

it("ignores prices sent by the client: unknown item fields are refused", async () => {
	const a = await product(5, 1000);
	const res = await order(alice, [{ productId: a.id, quantity: 1, unitPriceCents: 1 }]);
	expect(res.status).toBe(422);
	expect(await stockOf(a.id)).toBe(5);
});

it("refuses an order it cannot fill with 409 OUT_OF_STOCK and takes nothing", async () => {
	const a = await product(5);
	const b = await product(1);
	const res = await order(alice, [{ productId: a.id, quantity: 2 }, { productId: b.id, quantity: 2 }]);
	expect(res.status).toBe(409);
	expect(res.body).toMatchObject({ type: "OUT_OF_STOCK", data: { productId: b.id } });
	expect(await stockOf(a.id)).toBe(5);
	expect(await stockOf(b.id)).toBe(1);
});

it.each([
	[[], "items"],
	[[{ productId: 1, quantity: 0 }], "items[0].quantity"],
	[[{ productId: -1, quantity: 1 }], "items[0].productId"],
	[[{ productId: 1, quantity: 1.5 }], "items[0].quantity"],
	["nope", "items"],
])("refuses the items %j with 422 naming %s", async (items, field) => {
	const res = await order(alice, items);
	expect(res.status).toBe(422);
	expect(res.body.data.map((d: { field: string }) => d.field)).toContain(field);
});

it("answers 404 for a product that does not exist", async () => {
	const res = await order(alice, [{ productId: 999999, quantity: 1 }]);
	expect(res.status).toBe(404);
});

it("refuses mixed currencies in one order with 422 and takes nothing", async () => {
	const a = await product(5, 100, "TRY");
	const b = await product(5, 100, "EUR");
	const res = await order(alice, [{ productId: a.id, quantity: 1 }, { productId: b.id, quantity: 1 }]);
	expect(res.status).toBe(422);
	// The reservation was given back.
	expect(await stockOf(a.id)).toBe(5);
	expect(await stockOf(b.id)).toBe(5);
});

describe("Idempotency-Key", () => {
	it("answers the first order with 200 for the same key and body, and takes stock once", async () => {
		const a = await product(5);
		const first = await order(alice, [{ productId: a.id, quantity: 2 }], { "Idempotency-Key": "checkout-1" });
		const again = await order(alice, [{ productId: a.id, quantity: 2 }], { "Idempotency-Key": "checkout-1" });
		expect(first.status).toBe(201);
		expect(again.status).toBe(200);
		expect(again.body).toEqual(first.body);
		expect(await stockOf(a.id)).toBe(3);
	});

	it("answers 409 for the same key with another body", async () => {
		const a = await product(5);
		await order(alice, [{ productId: a.id, quantity: 1 }], { "Idempotency-Key": "checkout-2" });
		const other = await order(alice, [{ productId: a.id, quantity: 3 }], { "Idempotency-Key": "checkout-2" });
		expect(other.status).toBe(409);
		expect(other.body.type).toBe("IDEMPOTENCY_KEY_REUSED");
		expect(await stockOf(a.id)).toBe(4);
	});

	it("places one order for 10 concurrent requests with one key", async () => {
		const a = await product(50);
		const results = await Promise.all(Array.from({ length: 10 }, () => order(alice, [{ productId: a.id, quantity: 1 }], { "Idempotency-Key": "double-click" })));
		expect(new Set(results.map(r => r.body.id)).size).toBe(1);
		expect(results.map(r => r.status).sort()).toEqual([200, 200, 200, 200, 200, 200, 200, 200, 200, 201]);
		expect(await stockOf(a.id)).toBe(49);
	});

	it("keeps keys per user: another user's same key is another order", async () => {
		const a = await product(5);
		const mine = await order(alice, [{ productId: a.id, quantity: 1 }], { "Idempotency-Key": "shared-key" });
		const theirs = await order(bob, [{ productId: a.id, quantity: 1 }], { "Idempotency-Key": "shared-key" });
		expect(theirs.status).toBe(201);
		expect(theirs.body.id).not.toBe(mine.body.id);
	});

	it("refuses a key longer than 200 characters with 422", async () => {
		const a = await product(5);
		const res = await order(alice, [{ productId: a.id, quantity: 1 }], { "Idempotency-Key": "k".repeat(201) });
		expect(res.status).toBe(422);
		expect(res.body.data[0].field).toBe("Idempotency-Key");
	});
});

it("places exactly 30 of 100 concurrent single-unit orders against stock 30", async () => {
	const a = await product(30);
	const results = await Promise.all(Array.from({ length: 100 }, () => order(alice, [{ productId: a.id, quantity: 1 }])));
	const statuses = results.map(r => r.status);
	expect(statuses.filter(s => s === 201)).toHaveLength(30);
	expect(statuses.filter(s => s === 409)).toHaveLength(70);
	expect(await stockOf(a.id)).toBe(0);
});

describe("reading and cancelling", () => {
	let placed: { id: string };
	let productId: number;
	beforeAll(async () => {
		productId = (await product(10)).id;
		placed = (await order(alice, [{ productId, quantity: 3 }])).body;
	});

	it("lists the caller's orders newest first, and all of them for an admin", async () => {
		const second = (await order(alice, [{ productId, quantity: 1 }])).body;
		const mine = await http(base, "GET", "/api/orders?pageSize=2", { token: alice });
		expect(mine.status).toBe(200);
		expect(mine.body.rows.map((o: { id: string }) => o.id)).toEqual([second.id, placed.id]);
		expect(mine.body.rows.every((o: { userId: number }) => o.userId === mine.body.rows[0].userId)).toBe(true);
		// A full page is counted; the next page and one past the end carry the same total.
		expect(mine.body.total).toBeGreaterThanOrEqual(2);
		const next = await http(base, "GET", "/api/orders?pageSize=1&page=2", { token: alice });
		expect(next.body).toMatchObject({ total: mine.body.total, page: 2, pageSize: 1, totalPages: mine.body.total, rows: [expect.objectContaining({ id: placed.id })] });
		expect((await http(base, "GET", "/api/orders?pageSize=1&page=1000", { token: alice })).body).toMatchObject({ total: mine.body.total, rows: [] });
		const theirs = await http(base, "GET", "/api/orders", { token: bob });
		expect(theirs.body.rows.map((o: { id: string }) => o.id)).not.toContain(placed.id);
		const all = await http(base, "GET", "/api/orders?pageSize=100", { token: admin });
		expect(all.body.total).toBeGreaterThan(mine.body.total);
		await http(base, "POST", `/api/orders/${second.id}/cancel`, { token: alice });
	});

	it("hides another customer's order as 404, for reading and cancelling", async () => {
		expect((await http(base, "GET", `/api/orders/${placed.id}`, { token: alice })).status).toBe(200);
		expect((await http(base, "GET", `/api/orders/${placed.id}`, { token: bob })).status).toBe(404);
		expect((await http(base, "POST", `/api/orders/${placed.id}/cancel`, { token: bob })).status).toBe(404);
		expect((await http(base, "GET", `/api/orders/${placed.id}`, { token: admin })).status).toBe(200);
		expect((await http(base, "GET", "/api/orders/not-a-uuid", { token: alice })).status).toBe(422);
		expect((await http(base, "GET", `/api/orders/${placed.id}`)).status).toBe(401);
	});

	it("cancels once: the stock comes back once, a second cancel is 409", async () => {
		const before = await stockOf(productId);
		const results = await Promise.all([1, 2, 3].map(() => http(base, "POST", `/api/orders/${placed.id}/cancel`, { token: alice })));
		expect(results.map(r => r.status).sort()).toEqual([200, 409, 409]);
		expect(results.find(r => r.status === 200)!.body.status).toBe("cancelled");
		expect(results.find(r => r.status === 409)!.body.type).toBe("ORDER_NOT_CANCELLABLE");
		expect(await stockOf(productId)).toBe(before + 3);
		expect((await outboxEvents()).filter(e => e.event === "order.cancelled" && e.payload.order.id === placed.id)).toHaveLength(1);
	});
});
