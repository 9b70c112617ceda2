/**
 * What the fault scenarios (test/faults) share: a tally of what clients saw, a bounded load
 * loop, the one summary line each scenario prints (requests, outcomes by status, invariants
 * checked), and the shop's invariants read from the databases themselves.
 * Status 0 stands for a request that got no HTTP answer (connection refused or reset).
 */
import { http, type Res } from "./http";
import { pgQuery } from "./pg";
import { sleep } from "./wait";

export class Tally {
	readonly byStatus = new Map<number, number>();
	requests = 0;
	slowestMs = 0;

	/** Sends one request and counts its outcome; a connection error is status 0. */
	async send(base: string, method: string, path: string, opts: Parameters<typeof http>[3] = {}): Promise<Res & { ms: number }> {
		const started = Date.now();
		const res = await http(base, method, path, opts).catch(
			(err: Error): Res => ({ status: 0, headers: new Headers(), body: undefined, text: err.message }),
		);
		const ms = Date.now() - started;
		this.requests++;
		this.slowestMs = Math.max(this.slowestMs, ms);
		this.byStatus.set(res.status, (this.byStatus.get(res.status) ?? 0) + 1);
		return { ...res, ms };
	}

	statuses(): number[] {
		return [...this.byStatus.keys()].sort((a, b) => a - b);
	}

	describe(): string {
		const parts = this.statuses().map(s => `${s === 0 ? "no answer" : s}: ${this.byStatus.get(s)}`);
		return `${this.requests} requests, by status { ${parts.join(", ")} }, slowest ${this.slowestMs} ms`;
	}
}

/**
 * Runs `workers` loops of `step` until `stop()` is called; answers a promise of their end.
 * Each loop gets its index and its own iteration counter.
 */
export function load(workers: number, step: (worker: number, i: number) => Promise<unknown>): { stop(): Promise<void> } {
	let stopped = false;
	const loops = Array.from({ length: workers }, async (_, w) => {
		for (let i = 0; !stopped; i++) {
			await step(w, i);
			await sleep(0);
		}
	});
	return {
		async stop() {
			stopped = true;
			await Promise.all(loops);
		},
	};
}

/** The scenario's summary line, printed before its assertions so that a failing run shows it too. */
export function summary(scenario: string, tally: Tally, invariants: Record<string, boolean>): void {
	const checked = Object.entries(invariants).map(([name, ok]) => `${name} ${ok ? "ok" : "VIOLATED"}`);
	console.log(`[faults] ${scenario}: ${tally.describe()}; invariants: ${checked.join("; ")}`);
}

/** Violations of an invariant, one line each: empty when it holds. */
export type Violations = string[];

/** Stock conserved: for each product, its stock plus the quantities of its placed orders equals what it started with. */
export async function stockViolations(productsDb: string, ordersDb: string, initial: Map<number, number>): Promise<Violations> {
	const orders = await pgQuery<{ items: string }>(ordersDb, "SELECT items FROM orders WHERE status = 'placed'");
	const placed = new Map<number, number>();
	for (const o of orders) for (const line of JSON.parse(o.items) as Array<{ productId: number; quantity: number }>) placed.set(line.productId, (placed.get(line.productId) ?? 0) + line.quantity);
	const stock = await pgQuery<{ id: number; stock: number }>(productsDb, "SELECT id, stock FROM products WHERE id = ANY($1)", [[...initial.keys()]]);
	return stock
		.filter(p => p.stock + (placed.get(p.id) ?? 0) !== initial.get(p.id))
		.map(p => `product ${p.id}: stock ${p.stock} + placed ${placed.get(p.id) ?? 0} != ${initial.get(p.id)}`);
}

/** No half-written order: every order has its order.created event in the outbox, and every such event its order. */
export async function halfWrittenOrders(ordersDb: string): Promise<Violations> {
	const ids = new Set((await pgQuery<{ id: string }>(ordersDb, "SELECT id FROM orders")).map(r => r.id));
	const events = (await pgQuery<{ payload: string }>(ordersDb, "SELECT payload FROM outbox WHERE event = 'order.created'")).map(
		r => (JSON.parse(r.payload) as { order: { id: string } }).order.id,
	);
	const withEvent = new Set(events);
	return [
		...[...ids].filter(id => !withEvent.has(id)).map(id => `order ${id} without its order.created`),
		...events.filter(id => !ids.has(id)).map(id => `order.created of ${id} without its order`),
	];
}

/** No duplicate order for one Idempotency-Key of one user. */
export async function duplicateKeyOrders(ordersDb: string): Promise<Violations> {
	const rows = await pgQuery<{ user_id: number; idempotency_key: string; n: string }>(
		ordersDb,
		"SELECT user_id, idempotency_key, count(*) AS n FROM orders WHERE idempotency_key IS NOT NULL GROUP BY user_id, idempotency_key HAVING count(*) > 1",
	);
	return rows.map(r => `key ${r.idempotency_key} of user ${r.user_id}: ${r.n} orders`);
}

/** Every order of `orderIds` has exactly one order.created notification (and there are no others). */
export async function notificationViolations(notificationsDb: string, orderIds: string[]): Promise<Violations> {
	const rows = await pgQuery<{ order_id: string; n: string }>(
		notificationsDb,
		"SELECT order_id, count(*) AS n FROM notifications WHERE type = 'order.created' GROUP BY order_id",
	);
	const counts = new Map(rows.map(r => [r.order_id, Number(r.n)]));
	const wanted = new Set(orderIds);
	return [
		...orderIds.filter(id => counts.get(id) !== 1).map(id => `order ${id}: ${counts.get(id) ?? 0} notifications`),
		...[...counts.keys()].filter(id => !wanted.has(id)).map(id => `a notification for ${id}, which is no placed order`),
	];
}
