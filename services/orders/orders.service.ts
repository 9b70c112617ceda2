/**
 * orders: owns orders and their outbox. Places an order by reserving stock in products (by order
 * id, so no retry ever reserves twice), then writing the order and its order.created event in one
 * transaction. Never takes a price from the client; never shows one customer another's order.
 */
import { randomUUID } from "node:crypto";
import type { Context, Service, ServiceSchema } from "moleculer";
import type { Transaction } from "sequelize";
import { getConfig } from "../../lib/config";
import { NotFoundError, ServiceUnavailableError, UnauthorizedError } from "../../lib/errors";
import { envelope, type Order } from "../../lib/events";
import { faultPoint } from "../../lib/faults";
import { countMetric, METRICS } from "../../lib/metrics";
import { orderLinesParam, pageParams } from "../../lib/params";
import { DbMixin, isConnectionError, type DbMethods, type DbSettings } from "../../mixins/db.mixin";
import { OutboxMixin, type OutboxMethods, type OutboxSettings } from "../../mixins/outbox.mixin";
import {
	canCancel,
	checkIdempotencyKey,
	IdempotencyKeyReusedError,
	normalizeItems,
	orderIdFor,
	OrderNotCancellableError,
	priceOrder,
	requestHash,
	type PricedLine,
	type RequestedItem,
} from "./domain";
import { migrations } from "./migrations";
import { ORDER_COLUMNS, OrderModel, type OrderRow } from "./model";

export type OrdersSettings = DbSettings & OutboxSettings;

interface AuthUser {
	id: number;
	role: "customer" | "admin";
}
interface OrdersMeta {
	user?: AuthUser | null;
	idempotencyKey?: string;
	requestID?: string;
	$statusCode?: number;
}
interface Reservation {
	orderId: string;
	lines: PricedLine[];
	expiresAt: string;
}

interface OrdersMethods {
	toOrder(row: OrderRow): Order;
	findOrder(id: string): Promise<Order | null>;
	findVisible(ctx: Context<unknown, OrdersMeta>, id: string): Promise<Order>;
	findByKey(userId: number, key: string): Promise<OrderRow | null>;
	placeOrder(ctx: Context, order: Order, key: string | undefined, hash: string): Promise<void>;
	replay(ctx: Context<unknown, OrdersMeta>, row: OrderRow, hash: string): Order;
	release(ctx: Context, orderId: string): Promise<void>;
}
type OrdersThis = Service<OrdersSettings> & DbMethods & OutboxMethods & OrdersMethods;

const config = getConfig();

function requireUser(ctx: Context<unknown, OrdersMeta>): AuthUser {
	const user = ctx.meta.user;
	if (!user) throw new UnauthorizedError();
	return user;
}

const OrdersService: ServiceSchema<OrdersSettings> = {
	name: "orders",
	mixins: [DbMixin({ model: OrderModel, migrations }), OutboxMixin],

	settings: {
		databaseUrl: config.databaseUrls.orders,
		outboxPollMs: config.outboxPollMs,
		outboxHandoffMs: config.outboxHandoffMs,
		outboxBatch: 100,
	},

	hooks: {
		after: {
			create(this: OrdersThis, ctx: Context<unknown, OrdersMeta>, order: Order) {
				// A replay (200) answers an order counted when it was placed.
				if (ctx.meta.$statusCode !== 200) countMetric(this.broker, METRICS.ordersPlaced);
				return order;
			},
		},
		error: {
			create(this: OrdersThis, _ctx: Context, err: Error & { code?: number; type?: string }) {
				// Refused: what the client is told is its own doing (stock, product, key); a 5xx is a failure.
				if (typeof err.code === "number" && err.code >= 400 && err.code < 500)
					countMetric(this.broker, METRICS.ordersRefused, { reason: err.type ?? err.name });
				throw err;
			},
		},
	},

	actions: {
		create: {
			params: {
				items: orderLinesParam,
				$$strict: true,
			},
			async handler(this: OrdersThis, ctx: Context<{ items: RequestedItem[] }, OrdersMeta>): Promise<Order> {
				const user = requireUser(ctx);
				const key = checkIdempotencyKey(ctx.meta.idempotencyKey);
				const items = normalizeItems(ctx.params.items);
				const hash = requestHash(items);

				if (key) {
					const existing = await this.findByKey(user.id, key);
					if (existing) return this.replay(ctx, existing, hash);
				}

				const orderId = key ? orderIdFor(user.id, key) : randomUUID();
				// Idempotent by order id in products: a retry, a timeout or a second request with the
				// same key reaches the same reservation and takes no more stock.
				const reserve = () => ctx.call<Reservation, unknown>("products.reserve", { orderId, items });
				const expired = (r: Reservation) => Date.parse(r.expiresAt) <= Date.now();
				let reservation = await reserve();
				faultPoint("orders.after-reserve");
				if (expired(reservation)) {
					// Too late: the sweeper may already give this stock back. Do not commit on it.
					if (key) {
						// A request with the same key shares this order id and reservation (a client that
						// got no answer retried through another gateway): it may have placed the order on
						// it while this one waited. Then that order is the answer, and its stock stays.
						const winner = await this.findByKey(user.id, key);
						if (winner) return this.replay(ctx, winner, hash);
					}
					// Asked once more: a reservation still held is held again (products renews it and
					// takes nothing); one the sweeper released meanwhile is taken afresh.
					reservation = await reserve();
					if (expired(reservation)) {
						// With a key it is not released here, where it could still be a same-key order's:
						// the sweeper gives it back once orders says no order holds it.
						if (!key) await this.release(ctx, orderId);
						throw new ServiceUnavailableError("The stock reservation expired, try again");
					}
				}
				let priced: ReturnType<typeof priceOrder>;
				try {
					priced = priceOrder(reservation.lines);
				} catch (err) {
					await this.release(ctx, orderId);
					throw err;
				}
				const { items: lines, totalCents, currency } = priced;

				// One instant for both stamps.
				const now = new Date();
				const order: Order = {
					id: orderId,
					userId: user.id,
					status: "placed",
					items: lines,
					totalCents,
					currency,
					createdAt: now.toISOString(),
					updatedAt: now.toISOString(),
				};
				try {
					await this.placeOrder(ctx, order, key, hash);
				} catch (err) {
					// The connection was lost mid-transaction: the COMMIT may have landed, and releasing
					// would hand out the stock of a placed order. The sweeper in products decides from
					// what the orders database holds once it answers (orders.placement).
					let unknown = isConnectionError(err);
					if (key && !unknown) {
						// A concurrent request with the same key shares this order id and reservation. If
						// it committed first (this insert met its key, or failed otherwise while, say,
						// waiting on that row's lock), its order is the answer and the stock is its own.
						const winner = await this.findByKey(user.id, key).catch(() => undefined);
						if (winner) return this.replay(ctx, winner, hash);
						// Not known whether it did: not released here either.
						if (winner === undefined) unknown = true;
					}
					if (unknown) this.logger.warn(`Order ${orderId}: outcome unknown, its reservation is left to the sweeper`);
					else await this.release(ctx, orderId);
					throw err;
				}
				faultPoint("orders.after-commit");
				// The reservation is now the order's. If this call is lost, the sweeper in products asks
				// orders.placement and confirms it, and the order.created event confirms it too. The
				// event alone would do, but slower: while the relay is held up (an orders database
				// outage), every placed order's reservation would pass its time still held, and the
				// sweeper would ask orders about each of them before it reached the reservations of
				// orders that were never written (orders-db-cut.spec: their retries answered 503).
				await ctx.call("products.confirm", { orderId }).catch((err: Error) => {
					this.logger.warn(`Reservation ${orderId} not confirmed yet: ${err.message}`);
				});
				return order;
			},
		},

		list: {
			params: { ...pageParams, $$strict: true },
			async handler(this: OrdersThis, ctx: Context<{ page: number; pageSize: number }, OrdersMeta>) {
				const user = requireUser(ctx);
				const { pageSize } = ctx.params;
				const own = user.role !== "admin";
				// A customer's history newest first: the orders_user_history index, in its order.
				const query = { columns: ORDER_COLUMNS, from: own ? "orders WHERE user_id = $1" : "orders", order: "created_at DESC, id DESC", values: own ? [user.id] : [] };
				return this.pageOf(query, ctx.params.page, pageSize, (r: OrderRow) => this.toOrder(r));
			},
		},

		get: {
			params: { id: { type: "uuid" }, $$strict: true },
			handler(this: OrdersThis, ctx: Context<{ id: string }, OrdersMeta>) {
				return this.findVisible(ctx, ctx.params.id);
			},
		},

		cancel: {
			params: { id: { type: "uuid" }, $$strict: true },
			async handler(this: OrdersThis, ctx: Context<{ id: string }, OrdersMeta>): Promise<Order> {
				const current = await this.findVisible(ctx, ctx.params.id);
				if (!canCancel(current.status)) throw new OrderNotCancellableError(current);
				const cancelled = await this.transaction(async (t: Transaction) => {
					// Guarded by the status it had: of two concurrent cancels, one changes the row.
					const [affected] = await this.model.update(
						{ status: "cancelled" },
						{ where: { id: current.id, status: "placed" }, transaction: t },
					);
					if (affected === 0) return null;
					const row = (await this.model.findByPk(current.id, { raw: true, transaction: t })) as unknown as OrderRow;
					const order = this.toOrder(row);
					await this.addToOutbox(t, "order.cancelled", { ...envelope(), order }, ctx);
					return order;
				});
				if (!cancelled) throw new OrderNotCancellableError({ id: current.id, status: "cancelled" });
				// Exactly once, whichever arrives first: this call or products' order.cancelled consumer.
				await this.release(ctx, cancelled.id);
				return cancelled;
			},
		},

		/** For the reservation sweeper in products: does this order exist, and in what state. */
		placement: {
			visibility: "public",
			params: { id: { type: "uuid" } },
			async handler(this: OrdersThis, ctx: Context<{ id: string }>) {
				const order = await this.findOrder(ctx.params.id);
				return { state: order ? order.status : "absent" };
			},
		},
	},

	methods: {
		toOrder(row: OrderRow): Order {
			return {
				id: row.id,
				userId: row.userId,
				status: row.status,
				items: typeof row.items === "string" ? JSON.parse(row.items) : row.items,
				totalCents: Number(row.totalCents),
				currency: row.currency,
				createdAt: new Date(row.createdAt).toISOString(),
				updatedAt: new Date(row.updatedAt).toISOString(),
			};
		},

		async findOrder(this: OrdersThis, id: string): Promise<Order | null> {
			const { rows } = await this.sql<OrderRow>(`SELECT ${ORDER_COLUMNS} FROM orders WHERE id = $1`, [id]);
			return rows.length > 0 ? this.toOrder(rows[0]) : null;
		},

		/** The order if the caller may see it; another customer's order is "not found" (API.md). */
		async findVisible(this: OrdersThis, ctx: Context<unknown, OrdersMeta>, id: string): Promise<Order> {
			const user = requireUser(ctx);
			const order = await this.findOrder(id);
			if (!order || (user.role !== "admin" && order.userId !== user.id)) throw new NotFoundError("Order", id);
			return order;
		},

		async findByKey(this: OrdersThis, userId: number, key: string): Promise<OrderRow | null> {
			const { rows } = await this.sql<OrderRow>(`SELECT ${ORDER_COLUMNS} FROM orders WHERE user_id = $1 AND idempotency_key = $2`, [userId, key]);
			return rows[0] ?? null;
		},

		/**
		 * The order's row and its order.created, committed together. A second row for the same id,
		 * or the same user and key, fails on its unique index (Sequelize's UniqueConstraintError).
		 */
		async placeOrder(this: OrdersThis, ctx: Context, order: Order, key: string | undefined, hash: string): Promise<void> {
			const row = {
				text: `INSERT INTO orders (id, user_id, status, items, total_cents, currency, idempotency_key, request_hash, created_at, updated_at)
				 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)`,
				params: [order.id, order.userId, order.status, JSON.stringify(order.items), order.totalCents, order.currency, key ?? null, key ? hash : null, new Date(order.createdAt)],
			};
			await this.writeWithEvent(row, "order.created", { ...envelope(), order }, ctx);
		},

		/** The same key and body: the first order, with 200. Another body: 409. */
		replay(this: OrdersThis, ctx: Context<unknown, OrdersMeta>, row: OrderRow, hash: string): Order {
			if (row.requestHash !== hash) throw new IdempotencyKeyReusedError();
			ctx.meta.$statusCode = 200;
			return this.toOrder(row);
		},

		async release(this: OrdersThis, ctx: Context, orderId: string): Promise<void> {
			await ctx.call("products.release", { orderId }).catch((err: Error) => {
				// The sweeper (for an order never written) or the order.cancelled consumer gives it back.
				this.logger.warn(`Reservation ${orderId} not released yet: ${err.message}`);
			});
		},
	},
};

export default OrdersService;
