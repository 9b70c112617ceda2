/**
 * The stock reservations of products (services/products/reservations.ts), the same cases on each
 * dialect: test/unit/products-reservations.spec.ts runs them on SQLite,
 * test/integration/products-reservations-postgres.spec.ts on PostgreSQL.
 */
import { randomUUID } from "node:crypto";
import type { ServiceBroker } from "moleculer";
import type { Reservations } from "../../services/products/reservations";

export function reservationCases(context: () => { broker: ServiceBroker }): void {
	let skus = 0;
	const call = <T = any>(action: string, params: unknown) => context().broker.call<T, unknown>(`products.${action}`, params);
	const product = async (stock: number, priceCents = 500) =>
		(await call<{ id: number }>("create", { sku: `RSV-${++skus}`, name: `Thing ${skus}`, category: "things", priceCents, stock })).id;
	const stockOf = async (id: number) => (await call<{ stock: number }>("get", { id })).stock;
	const reservations = () => (context().broker.getLocalService("products") as unknown as { reservations: Reservations }).reservations;

	it("takes every line or none: a second line short of stock leaves the first untouched", async () => {
		const [a, b] = [await product(10), await product(5)];
		const orderId = randomUUID();
		await expect(call("reserve", { orderId, items: [{ productId: a, quantity: 1 }, { productId: b, quantity: 6 }] })).rejects.toMatchObject({
			code: 409,
			type: "OUT_OF_STOCK",
			data: { productId: b, requested: 6 },
		});
		expect([await stockOf(a), await stockOf(b)]).toEqual([10, 5]);
		expect(await reservations().find(orderId)).toBeNull();
	});

	it("answers 404 for a product that does not exist and takes nothing", async () => {
		const a = await product(10);
		await expect(call("reserve", { orderId: randomUUID(), items: [{ productId: a, quantity: 1 }, { productId: 999_999, quantity: 1 }] })).rejects.toMatchObject({
			code: 404,
		});
		expect(await stockOf(a)).toBe(10);
	});

	it("refuses a single line short of stock with 409, a missing product with 404, and takes nothing", async () => {
		const a = await product(2);
		const orderId = randomUUID();
		await expect(call("reserve", { orderId, items: [{ productId: a, quantity: 3 }] })).rejects.toMatchObject({ code: 409, type: "OUT_OF_STOCK" });
		await expect(call("reserve", { orderId, items: [{ productId: 999_999, quantity: 1 }] })).rejects.toMatchObject({ code: 404 });
		expect(await stockOf(a)).toBe(2);
		expect(await reservations().find(orderId)).toBeNull();
		expect((await call("reserve", { orderId, items: [{ productId: a, quantity: 2 }] })).status).toBe("held");
		expect(await stockOf(a)).toBe(0);
	});

	it("answers the reservation to a retry even when the stock has run out since", async () => {
		const a = await product(3);
		const orderId = randomUUID();
		const first = await call("reserve", { orderId, items: [{ productId: a, quantity: 3 }] });
		expect(await stockOf(a)).toBe(0);
		expect(await call("reserve", { orderId, items: [{ productId: a, quantity: 3 }] })).toEqual(first);
		expect(await stockOf(a)).toBe(0);
	});

	it("reserves once for one order id called 10 times at once", async () => {
		const a = await product(10);
		const orderId = randomUUID();
		const answers = await Promise.all(Array.from({ length: 10 }, () => call("reserve", { orderId, items: [{ productId: a, quantity: 2 }] })));
		expect(new Set(answers.map(r => JSON.stringify(r))).size).toBe(1);
		expect(await stockOf(a)).toBe(8);
	});

	it("answers each line's catalog name and price, one line per product in id order", async () => {
		const [a, b] = [await product(10, 700), await product(10, 900)];
		const reservation = await call("reserve", { orderId: randomUUID(), items: [{ productId: b, quantity: 1 }, { productId: a, quantity: 2 }, { productId: b, quantity: 1 }] });
		expect(reservation.status).toBe("held");
		expect(reservation.lines).toEqual([
			{ productId: a, sku: `RSV-${skus - 1}`, name: `Thing ${skus - 1}`, quantity: 2, unitPriceCents: 700, currency: "TRY" },
			{ productId: b, sku: `RSV-${skus}`, name: `Thing ${skus}`, quantity: 2, unitPriceCents: 900, currency: "TRY" },
		]);
		expect([await stockOf(a), await stockOf(b)]).toEqual([8, 8]);
	});

	it("reserves once per order id, and again only after a release", async () => {
		const a = await product(10);
		const orderId = randomUUID();
		const items = [{ productId: a, quantity: 3 }];
		const first = await call("reserve", { orderId, items });
		expect(await call("reserve", { orderId, items })).toEqual(first);
		expect(await stockOf(a)).toBe(7);
		expect(await call("release", { orderId })).toEqual({ released: true });
		expect(await call("release", { orderId })).toEqual({ released: false });
		expect(await stockOf(a)).toBe(10);
		expect((await call("reserve", { orderId, items })).status).toBe("held");
		expect(await stockOf(a)).toBe(7);
	});

	it("confirms a held reservation once, and answers the status it has otherwise", async () => {
		const a = await product(10);
		const orderId = randomUUID();
		await call("reserve", { orderId, items: [{ productId: a, quantity: 1 }] });
		expect(await call("confirm", { orderId })).toEqual({ status: "confirmed" });
		expect(await call("confirm", { orderId })).toEqual({ status: "confirmed" });
		expect(await call("confirm", { orderId: randomUUID() })).toEqual({ status: null });
		await call("release", { orderId });
		expect(await call("confirm", { orderId })).toEqual({ status: "released" });
		expect(await stockOf(a)).toBe(10);
	});

	it("holds a reservation whose time ran out again for a second call of the same order, taking no more stock", async () => {
		const a = await product(10);
		const orderId = randomUUID();
		// The request that reserved gave up or died: its reservation is held, its time past.
		const first = await reservations().reserve(orderId, [{ productId: a, quantity: 1 }], 1);
		await new Promise(r => setTimeout(r, 20));
		expect(Date.parse(first.reservation.expiresAt)).toBeLessThan(Date.now());
		const retry = await call<{ status: string; expiresAt: string; lines: unknown[] }>("reserve", { orderId, items: [{ productId: a, quantity: 1 }] });
		expect(retry.status).toBe("held");
		expect(Date.parse(retry.expiresAt)).toBeGreaterThan(Date.now());
		expect(retry.lines).toEqual(first.reservation.lines);
		expect(await stockOf(a)).toBe(9);
		expect((await reservations().find(orderId))?.expiresAt).toBe(retry.expiresAt);
	});

	it("releases for the sweeper only a reservation still due, never one held again since it was found", async () => {
		const a = await product(10);
		const orderId = randomUUID();
		await reservations().reserve(orderId, [{ productId: a, quantity: 2 }], 1);
		await new Promise(r => setTimeout(r, 20));
		const cutoff = new Date();
		expect(await reservations().expired(cutoff, 1000)).toContain(orderId);
		// A retry of the order holds it again before the sweeper's release.
		await call("reserve", { orderId, items: [{ productId: a, quantity: 2 }] });
		expect(await reservations().release(orderId, cutoff)).toEqual([]);
		expect(await stockOf(a)).toBe(8);
		expect((await reservations().find(orderId))?.status).toBe("held");
		// Without a cutoff (orders cancelled it, or gave up on it) it is released.
		expect(await call("release", { orderId })).toEqual({ released: true });
		expect(await stockOf(a)).toBe(10);
	});

	it("finds a held reservation once its time has run out, and not before", async () => {
		const a = await product(10);
		const orderId = randomUUID();
		const { expiresAt } = await call<{ expiresAt: string }>("reserve", { orderId, items: [{ productId: a, quantity: 1 }] });
		const due = Date.parse(expiresAt);
		expect(await reservations().expired(new Date(due - 1000), 1000)).not.toContain(orderId);
		expect(await reservations().expired(new Date(due + 1000), 1000)).toContain(orderId);
	});
}
