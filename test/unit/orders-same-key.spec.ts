/**
 * Two requests with one Idempotency-Key in flight together (a client that got no answer from a
 * gateway that died retries on another while the first request still runs): they share one order
 * id and one reservation. The one that finds the reservation expired, or whose own insert fails,
 * must not give back the stock of the order the other one placed on it; alone, a request whose
 * reservation answer came too late places its order on that reservation, held again.
 */
import type { ServiceBroker, Middleware } from "moleculer";
import { createNode, gatewayUrl, sqliteUrls, tempDir } from "../support/broker";
import { http, login, type Res } from "../support/http";
import { sleep } from "../support/wait";

const ADMIN = { email: "admin@same-key.test", password: "admin-password-1" };
const TTL_MS = 400;
let broker: ServiceBroker;
let base: string;
let tmp: ReturnType<typeof tempDir>;

/** The first products.reserve answers only once `open` is called: its caller sees it late. */
let reserved: () => void = () => undefined;
let open: () => void = () => undefined;
let holdNext = false;
const holdFirstReserve: Middleware = {
	name: "HoldFirstReserve",
	localAction(next: (ctx: unknown) => Promise<unknown>, action: { name: string }) {
		if (action.name !== "products.reserve") return next;
		return async (ctx: unknown) => {
			const result = await next(ctx);
			if (holdNext) {
				holdNext = false;
				const gate = new Promise<void>(resolve => (open = resolve));
				reserved();
				await gate;
			}
			return result;
		};
	},
} as unknown as Middleware;

beforeAll(async () => {
	tmp = tempDir();
	broker = createNode({
		services: ["api", "users", "products", "orders"],
		databaseUrls: sqliteUrls(tmp.dir, ["users", "products", "orders"]),
		settings: { users: { admin: ADMIN }, products: { reservationTtlMs: TTL_MS, reservationSweepMs: 0 } },
		middlewares: [holdFirstReserve],
	});
	await broker.start();
	base = gatewayUrl(broker);
});

afterAll(async () => {
	await broker.stop();
	tmp.remove();
});

/** A product of 10, a customer, and `send`: an order of `quantity` with the key same-key-<n>. */
async function sameKeyClient(n: number, quantity: number) {
	const admin = await login(base, ADMIN.email, ADMIN.password);
	const product = (await http(base, "POST", "/api/products", { token: admin, body: { sku: `SK-${n}`, name: "Kilim", category: "k", priceCents: 700, stock: 10 } })).body;
	const customer = (await http(base, "POST", "/api/users/register", { body: { email: `sk${n}@example.com`, password: "password-123", name: "SK" } })).body.token;
	const send = () => http(base, "POST", "/api/orders", { token: customer, body: { items: [{ productId: product.id, quantity }] }, headers: { "idempotency-key": `same-key-${n}` } });
	const orders = async () => (await http(base, "GET", "/api/orders", { token: customer })).body.rows as Array<{ id: string }>;
	const stock = async () => (await http(base, "GET", `/api/products/${product.id}`)).body.stock as number;
	return { send, orders, stock };
}

/** Sends `send`'s request, held once reserved; resolves when it is held, with its answer's promise. */
async function sendHeld(send: () => Promise<Res>) {
	holdNext = true;
	const held = new Promise<void>(resolve => (reserved = resolve)).then(() => undefined);
	const answer = send();
	await held;
	return { answer };
}

/**
 * Two requests with one key: the first is held once reserved, the second (the retry) runs to its
 * end. Then `beforeFirstGoesOn` runs, the first request goes on, and its answer, the customer's
 * orders and the stock are returned.
 */
async function sameKeyPair(n: number, quantity: number, beforeFirstGoesOn: () => Promise<void> | void) {
	const client = await sameKeyClient(n, quantity);
	const { answer } = await sendHeld(client.send);
	// The reservation is held and young: the retry finds it and places the order on it.
	const retry = await client.send();
	expect(retry.status).toBe(201);
	await beforeFirstGoesOn();
	open();
	const late = await answer;
	return { retry, late, orders: await client.orders(), stock: await client.stock() };
}

it("answers the order placed by a concurrent request with the same key, and keeps its stock, when its own reservation answer came too late", async () => {
	// The first request learns of a reservation whose time has run out.
	const { retry, late, orders, stock } = await sameKeyPair(1, 3, () => sleep(TTL_MS + 100));
	expect(late.status).toBe(200);
	expect(late.body.id).toBe(retry.body.id);
	expect(orders).toHaveLength(1);
	expect(stock).toBe(7);
});

it("answers the order a concurrent request with the same key placed, and keeps its stock, when its own insert failed for another reason", async () => {
	// The first request's insert fails, not on the key (as a lock or statement timeout while waiting
	// on the retry's row would): the retry's order holds the reservation they share.
	const { retry, late, orders, stock } = await sameKeyPair(2, 4, () => {
		const svc = broker.getLocalService("orders") as unknown as { placeOrder: (...a: unknown[]) => Promise<void> };
		const placeOrder = svc.placeOrder;
		svc.placeOrder = async () => {
			svc.placeOrder = placeOrder;
			throw new Error("canceling statement due to lock timeout");
		};
	});
	expect(late.status).toBe(200);
	expect(late.body.id).toBe(retry.body.id);
	expect(orders).toHaveLength(1);
	expect(stock).toBe(6);
});

it("places the order of a request whose reservation answer came too late on that reservation, held again, taking no more stock", async () => {
	// No concurrent request this time: the first answer says the reservation's time has run out.
	// Asked again, products holds the same reservation again (nothing released it: the sweeper is
	// off here) and the order is placed on it.
	const client = await sameKeyClient(3, 2);
	const { answer } = await sendHeld(client.send);
	await sleep(TTL_MS + 100);
	open();
	const late = await answer;
	expect(late.status).toBe(201);
	expect(await client.orders()).toHaveLength(1);
	expect(await client.stock()).toBe(8);
	// The client's retry with its key answers that order.
	const retry = await client.send();
	expect(retry.status).toBe(200);
	expect(retry.body.id).toBe(late.body.id);
	expect(await client.stock()).toBe(8);
});
