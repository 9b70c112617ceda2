/**
 * The bench's scenarios: what each sends, what it prepares, and what it checks afterwards.
 * Each request of a scenario is drawn per request (ids, queries, customers), so caches see the
 * spread a shop sees, not one hot URL.
 */
import { randomUUID } from "node:crypto";
import { sampler, CATEGORIES, type Distribution } from "./common";
import { log, query, type Store, type Target } from "./targets";

export type ScenarioName = "get" | "get-uncached" | "list" | "list-uncached" | "order" | "order-sustained";

/**
 * `order-sustained` places orders at this share of the orders/s its target's closed loop (`order`,
 * 50 connections sending as fast as they are answered) reached in the same pass, as an open load:
 * the event lag at a rate the target sustains with room to spare, not at its saturation, where
 * every queue is full by construction. Four fifths: the load a service is run at, not the most it takes.
 */
export const SUSTAINED_SHARE = 0.8;

/** An autocannon request of ours: built per request, its answer counted. */
export interface Load {
	method: "GET" | "POST";
	/** Builds one request: path, headers, body. */
	next(): { path: string; headers?: Record<string, string>; body?: string };
	/** Called with each answer (status, body when asked for). */
	onResponse?(status: number, body: string | undefined): void;
	/** autocannon must keep the bodies (order ids). */
	wantBody?: boolean;
}

export interface Customer {
	id: number;
	token: string;
}

/** Registers `n` customers through the API (the order scenario's clients). */
export async function registerCustomers(t: Target, n: number, tag: string): Promise<Customer[]> {
	const out: Customer[] = [];
	for (let i = 0; i < n; i++) {
		const res = await fetch(`http://127.0.0.1:${t.port}/api/users/register`, {
			method: "POST",
			headers: { "Content-Type": "application/json" },
			body: JSON.stringify({ email: `bench-${tag}-${i}@example.com`, password: "bench-password-1", name: `Bench ${i}` }),
		});
		const body = (await res.json()) as { user: { id: number }; token: string };
		if (res.status !== 201) throw new Error(`${t.name}: register answered ${res.status} ${JSON.stringify(body)}`);
		out.push({ id: body.user.id, token: body.token });
	}
	return out;
}

export function getLoad(products: number, dist: Distribution): Load {
	const next = sampler(dist, products);
	return { method: "GET", next: () => ({ path: `/api/products/${next()}` }) };
}

/** A fixed set of 60 list questions (search word, category, sort), drawn uniformly. */
export function listQueries(products: number): string[] {
	const sorts = ["-createdAt", "priceCents", "name"];
	const out: string[] = [];
	for (let i = 0; i < 60; i++) {
		const params = new URLSearchParams({ pageSize: "20", sort: sorts[i % sorts.length] });
		// "product 1234" matches that product and any whose number starts with it: a selective search.
		if (i % 2 === 0) params.set("q", `product ${1 + ((i * 7919) % products)}`);
		if (i % 3 !== 0) params.set("category", CATEGORIES[i % CATEGORIES.length]);
		out.push(`/api/products?${params}`);
	}
	return out;
}

/**
 * Searches that each match exactly one product at any catalog size: "product N" with N above a
 * tenth of the catalog, so no longer number starts with N. The growth scenario reports them next to
 * listLoad's searches, whose answers grow with the catalog ("product 1" matches 112 products of
 * 1,000 and 11,112 of 100,000), so that what the two sizes compare is the index, not the answer.
 */
export function oneMatchSearchLoad(products: number): Load {
	const low = Math.floor(products / 10) + 1;
	const queries = Array.from({ length: 30 }, (_, i) => `/api/products?${new URLSearchParams({ pageSize: "20", q: `product ${low + ((i * 7919) % (products - low + 1))}` })}`);
	return { method: "GET", next: () => ({ path: queries[Math.floor(Math.random() * queries.length)] }) };
}

/** The list questions drawn uniformly; `searchOnly`: those with a search word. */
export function listLoad(products: number, searchOnly = false): Load {
	const queries = listQueries(products).filter(q => !searchOnly || q.includes("q="));
	return { method: "GET", next: () => ({ path: queries[Math.floor(Math.random() * queries.length)] }) };
}

/** POST /api/orders of one unit of a random product, as a random customer, with a fresh Idempotency-Key. */
export function orderLoad(products: number, customers: Customer[], placed: string[]): Load {
	const next = sampler("uniform", products);
	return {
		method: "POST",
		wantBody: true,
		next: () => {
			const c = customers[Math.floor(Math.random() * customers.length)];
			return {
				path: "/api/orders",
				headers: { "Content-Type": "application/json", ...(c ? { Authorization: `Bearer ${c.token}` } : {}), "Idempotency-Key": randomUUID() },
				body: JSON.stringify({ items: [{ productId: next(), quantity: 1 }] }),
			};
		},
		onResponse(status, body) {
			if (status === 201 && body) placed.push((JSON.parse(body) as { id: string }).id);
		},
	};
}

/** A date from PostgreSQL (Date) or SQLite ("2026-11-26 17:20:00.123 +00:00") in ms. */
function ms(v: unknown): number {
	if (v instanceof Date) return v.getTime();
	const s = String(v);
	return Date.parse(s.includes("T") ? s : s.replace(" ", "T").replace(" +00:00", "Z"));
}

const quantile = (sorted: number[], q: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : NaN);

export interface OrderCheck {
	placed: number;
	notified: number;
	duplicates: number;
	lagP50: number;
	lagP99: number;
	/**
	 * The outbox row's created_at to its sent_at: on RabbitMQ the broker's confirm of the relay's
	 * batch (the relay's part of the lag); in one process every consumer's handling of the batch.
	 */
	relayP50: number;
	relayP99: number;
	drainMs: number;
}

/**
 * After an order load on our code: waits (at most `timeoutMs`) until every placed order has its
 * notification, then counts them (exactly one each) and measures the event lag: the order row's
 * created_at (the event's occurredAt) to the notification row's created_at.
 */
export async function checkNotifications(orders: Store, notifications: Store, placed: string[], timeoutMs: number): Promise<OrderCheck> {
	const t0 = Date.now();
	const want = new Set(placed);
	const ids = [...want];
	const rowsFor = async (store: Store, sql: string) => {
		const out: Array<Record<string, unknown>> = [];
		for (let i = 0; i < ids.length; i += 500) {
			const chunk = ids.slice(i, i + 500);
			out.push(...(await query(store, sql.replace("(?)", `(${chunk.map(() => "?").join(",")})`), chunk)));
		}
		return out;
	};
	let notes: Array<Record<string, unknown>> = [];
	for (;;) {
		notes = await rowsFor(notifications, "SELECT order_id, created_at FROM notifications WHERE order_id IN (?)");
		if (new Set(notes.map(n => String(n.order_id))).size >= want.size || Date.now() - t0 > timeoutMs) break;
		await new Promise(r => setTimeout(r, 250));
	}
	const drainMs = Date.now() - t0;
	const orderRows = await rowsFor(orders, "SELECT id, created_at FROM orders WHERE id IN (?)");
	const createdAt = new Map(orderRows.map(r => [String(r.id), ms(r.created_at)]));
	const perOrder = new Map<string, number>();
	const lags: number[] = [];
	for (const n of notes) {
		const id = String(n.order_id);
		perOrder.set(id, (perOrder.get(id) ?? 0) + 1);
		const at = createdAt.get(id);
		if (at !== undefined) lags.push(ms(n.created_at) - at);
	}
	lags.sort((a, b) => a - b);
	// The outbox rows of the measured orders (those written since the first of them).
	const since = Math.min(...createdAt.values());
	const relayed = (await query(orders, "SELECT created_at, sent_at FROM outbox WHERE event = 'order.created' AND sent_at IS NOT NULL", []))
		.map(r => ({ at: ms(r.created_at), sent: ms(r.sent_at) }))
		.filter(r => r.at >= since)
		.map(r => r.sent - r.at)
		.sort((a, b) => a - b);
	const check = {
		placed: want.size,
		notified: perOrder.size,
		duplicates: [...perOrder.values()].filter(c => c > 1).length,
		lagP50: quantile(lags, 0.5),
		lagP99: quantile(lags, 0.99),
		relayP50: quantile(relayed, 0.5),
		relayP99: quantile(relayed, 0.99),
		drainMs,
	};
	if (orderRows.length !== want.size) log(`orders: ${want.size} answered 201 but ${orderRows.length} are stored`);
	return check;
}
