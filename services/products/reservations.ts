/**
 * Stock reservations of the products service: all-or-nothing, by conditional updates in one
 * transaction (on PostgreSQL, for an order of one line, in one statement), never
 * read-modify-write, idempotent by order id, released exactly once.
 * Only the products service imports this.
 */
import { DataTypes, Op, Sequelize, Transaction, type ModelStatic, type Model } from "sequelize";
import { NotFoundError, OutOfStockError } from "../../lib/errors";
import { errorCode, runSql } from "../../lib/sql";

export type ReservationStatus = "held" | "confirmed" | "released";

export interface ReservedLine {
	productId: number;
	sku: string;
	name: string;
	quantity: number;
	unitPriceCents: number;
	currency: string;
}

export interface Reservation {
	orderId: string;
	status: ReservationStatus;
	lines: ReservedLine[];
	expiresAt: string;
}

interface ReservationRow {
	order_id: string;
	lines: string;
	status: ReservationStatus;
	expires_at: Date | string;
}

/** What taking a line's stock answers of its product (`RETURNING ${TAKEN_COLUMNS}`). */
interface TakenRow {
	id: number;
	sku: string;
	name: string;
	price_cents: number;
	currency: string;
}
const TAKEN_COLUMNS = "id, sku, name, price_cents, currency";

function reservedLine(p: TakenRow, quantity: number): ReservedLine {
	return { productId: p.id, sku: p.sku, name: p.name, quantity, unitPriceCents: p.price_cents, currency: p.currency };
}

export interface RequestedLine {
	productId: number;
	quantity: number;
}

/** One line per product, in id order: every transaction locks rows in the same order (no deadlock). */
export function mergeLines(items: RequestedLine[]): RequestedLine[] {
	const byId = new Map<number, number>();
	for (const { productId, quantity } of items) byId.set(productId, (byId.get(productId) ?? 0) + quantity);
	return [...byId.entries()].sort(([a], [b]) => a - b).map(([productId, quantity]) => ({ productId, quantity }));
}

export class Reservations {
	private readonly table: ModelStatic<Model>;

	constructor(
		private readonly sequelize: Sequelize,
		private readonly products: ModelStatic<Model>,
		private readonly begin: <T>(fn: (t: Transaction) => Promise<T>) => Promise<T>,
	) {
		this.table = sequelize.define(
			"reservation",
			{
				order_id: { type: DataTypes.STRING(36), primaryKey: true },
				lines: { type: DataTypes.TEXT, allowNull: false },
				status: { type: DataTypes.STRING(16), allowNull: false },
				expires_at: { type: DataTypes.DATE, allowNull: false },
				created_at: { type: DataTypes.DATE },
				updated_at: { type: DataTypes.DATE },
			},
			{ tableName: "reservations", timestamps: true, createdAt: "created_at", updatedAt: "updated_at" },
		);
	}

	async find(orderId: string, transaction?: Transaction): Promise<Reservation | null> {
		const { rows } = await runSql<ReservationRow>(
			this.sequelize,
			"SELECT order_id, lines, status, expires_at FROM reservations WHERE order_id = $1",
			[orderId],
			transaction,
		);
		return rows.length > 0 ? toReservation(rows[0]) : null;
	}

	/**
	 * Takes the stock of every line or of none. A second call for the same order answers the first
	 * reservation and takes nothing (a retried or timed-out call never reserves twice); one still
	 * held past its time is held again for `ttlMs` (`renewals` bounds the retries of a race with
	 * the sweeper's release).
	 *
	 * The first call is the common one, so it is not preceded by a look for an earlier reservation:
	 * the stock is taken and the reservation row claims the order id in the same transaction (an
	 * upsert that writes only over a released reservation). If a live reservation holds the id, the
	 * claim writes nothing and the transaction is rolled back, giving the stock back; the answer is
	 * then that reservation. A line that falls short on a retry answers it too, not 409.
	 */
	async reserve(orderId: string, items: RequestedLine[], ttlMs: number, renewals = 1): Promise<{ reservation: Reservation; taken: boolean }> {
		const lines = mergeLines(items);
		try {
			if (lines.length === 1 && this.sequelize.getDialect() === "postgres") return await this.reserveOne(orderId, lines[0], ttlMs);
			return await this.begin(async t => {
				const now = new Date();
				const reserved: ReservedLine[] = [];
				// One line after another in id order; a line that falls short throws and rolls back every line.
				for (const line of lines) reserved.push(await this.take(line, now, t));
				const expiresAt = new Date(now.getTime() + ttlMs);
				if (!(await this.hold(orderId, reserved, expiresAt, now, t))) throw new AlreadyReserved();
				return { reservation: { orderId, status: "held" as const, lines: reserved, expiresAt: expiresAt.toISOString() }, taken: true };
			});
		} catch (err) {
			// Held or confirmed already (a retry, or a concurrent call that committed first): that
			// reservation is the answer, whatever the stock is now.
			if (err instanceof AlreadyReserved || err instanceof OutOfStockError || err instanceof NotFoundError) {
				const earlier = await this.find(orderId);
				if (earlier?.status === "held" && Date.parse(earlier.expiresAt) <= Date.now()) {
					// Its time ran out before any order confirmed it: the request that reserved gave up
					// or died, and this is the client's retry with the same key. Held again for it, as
					// nothing released it yet; released meanwhile, it is reserved afresh.
					const renewed = await this.renew(orderId, new Date(Date.now() + ttlMs));
					if (renewed) return { reservation: renewed, taken: false };
					if (renewals > 0) return this.reserve(orderId, items, ttlMs, renewals - 1);
				}
				if (earlier && earlier.status !== "released") return { reservation: earlier, taken: false };
			}
			throw err;
		}
	}

	/**
	 * A held reservation held until `expiresAt`, its stock still taken. Null when it is no longer
	 * held (released or confirmed meanwhile): the status guards it, as it guards every change.
	 */
	private async renew(orderId: string, expiresAt: Date): Promise<Reservation | null> {
		const { rows } = await runSql<ReservationRow>(
			this.sequelize,
			"UPDATE reservations SET expires_at = $2, updated_at = $3 WHERE order_id = $1 AND status = 'held' RETURNING order_id, lines, status, expires_at",
			[orderId, expiresAt, new Date()],
		);
		return rows.length > 0 ? toReservation(rows[0]) : null;
	}

	/**
	 * PostgreSQL, an order of one line: the take and the claim in one statement (data-modifying
	 * CTEs), one round trip instead of a transaction's four. The statement is atomic: when the stock
	 * falls short nothing is taken and nothing claimed (no row comes back); when a live reservation
	 * holds the order id the claim writes nothing, and the division by the claimed rows fails the
	 * statement (22012), so the stock it took is given back with it. Same errors as the
	 * transaction's: NotFoundError, OutOfStockError, AlreadyReserved.
	 */
	private async reserveOne(orderId: string, { productId, quantity }: RequestedLine, ttlMs: number): Promise<{ reservation: Reservation; taken: true }> {
		const now = new Date();
		const expiresAt = new Date(now.getTime() + ttlMs);
		let rows: TakenRow[];
		try {
			({ rows } = await runSql<TakenRow>(
				this.sequelize,
				`WITH taken AS (
					UPDATE products SET stock = stock - $2, updated_at = $3 WHERE id = $1 AND stock >= $2
					RETURNING ${TAKEN_COLUMNS}
				), claimed AS (
					INSERT INTO reservations (order_id, lines, status, expires_at, created_at, updated_at)
					SELECT $4, json_build_array(json_build_object('productId', id, 'sku', sku, 'name', name, 'quantity', $2::integer,
						'unitPriceCents', price_cents, 'currency', currency))::text, 'held', $5, $3, $3 FROM taken
					ON CONFLICT (order_id) DO UPDATE SET lines = excluded.lines, status = 'held', expires_at = excluded.expires_at, updated_at = excluded.updated_at
					WHERE reservations.status = 'released'
					RETURNING order_id
				)
				SELECT ${TAKEN_COLUMNS}, 1 / (SELECT count(*) FROM claimed) AS claimed FROM taken`,
				[productId, quantity, now, orderId, expiresAt],
			));
		} catch (err) {
			if (errorCode(err) === "22012") throw new AlreadyReserved();
			throw err;
		}
		if (rows.length === 0) return this.shortOf({ productId, quantity });
		return { reservation: { orderId, status: "held", lines: [reservedLine(rows[0], quantity)], expiresAt: expiresAt.toISOString() }, taken: true };
	}

	/**
	 * One line's stock by a conditional update (never read-modify-write), answering the catalog's
	 * name and price from the same statement. 404 for a product that does not exist, 409 for one
	 * short of stock.
	 */
	private async take({ productId, quantity }: RequestedLine, now: Date, t: Transaction): Promise<ReservedLine> {
		const { rows } = await runSql<TakenRow>(
			this.sequelize,
			`UPDATE products SET stock = stock - $2, updated_at = $3 WHERE id = $1 AND stock >= $2 RETURNING ${TAKEN_COLUMNS}`,
			[productId, quantity, now],
			t,
		);
		if (rows.length === 0) return this.shortOf({ productId, quantity }, t);
		return reservedLine(rows[0], quantity);
	}

	/** Nothing was taken for the line: 404 when its product does not exist, else 409. */
	private async shortOf({ productId, quantity }: RequestedLine, t?: Transaction): Promise<never> {
		const { count } = await runSql(this.sequelize, "SELECT id FROM products WHERE id = $1", [productId], t);
		if (count === 0) throw new NotFoundError("Product", productId);
		throw new OutOfStockError(productId, quantity);
	}

	/**
	 * The reservation row: new, or written over a released one. False when a held or confirmed
	 * reservation has the order id (then nothing is written). A concurrent claim of the same id
	 * waits on the key until the first commits or rolls back, then sees its row.
	 */
	private async hold(orderId: string, lines: ReservedLine[], expiresAt: Date, now: Date, t: Transaction): Promise<boolean> {
		const { count } = await runSql(
			this.sequelize,
			`INSERT INTO reservations (order_id, lines, status, expires_at, created_at, updated_at) VALUES ($1, $2, 'held', $3, $4, $4)
			 ON CONFLICT (order_id) DO UPDATE SET lines = excluded.lines, status = 'held', expires_at = excluded.expires_at, updated_at = excluded.updated_at
			 WHERE reservations.status = 'released'
			 RETURNING order_id`,
			[orderId, JSON.stringify(lines), expiresAt, now],
			t,
		);
		return count === 1;
	}

	/** held → confirmed: the order was committed. Answers whether this call confirmed it (guarded by the status). */
	async confirm(orderId: string): Promise<boolean> {
		const { count } = await runSql(
			this.sequelize,
			"UPDATE reservations SET status = 'confirmed', updated_at = $2 WHERE order_id = $1 AND status = 'held'",
			[orderId, new Date()],
		);
		return count === 1;
	}

	/**
	 * Gives the stock back once: the status moves to released in the same transaction that adds the
	 * stock, guarded by the status it had, so a second release (or a concurrent one) adds nothing.
	 * With `dueBefore` (the sweeper) only a held reservation whose time ran out before it: one held
	 * again since (renewed by a retry of its order) is left alone. Answers the product ids whose
	 * stock changed.
	 */
	async release(orderId: string, dueBefore?: Date): Promise<number[]> {
		return this.begin(async t => {
			const where = dueBefore
				? { order_id: orderId, status: "held", expires_at: { [Op.lt]: dueBefore } }
				: { order_id: orderId, status: { [Op.in]: ["held", "confirmed"] } };
			const [affected] = await this.table.update({ status: "released" }, { where, transaction: t });
			if (affected === 0) return [];
			const reservation = (await this.find(orderId, t))!;
			for (const line of reservation.lines) {
				await this.products.update(
					{ stock: this.sequelize.literal(`stock + ${Number(line.quantity)}`) },
					{ where: { id: line.productId }, transaction: t },
				);
			}
			return reservation.lines.map(l => l.productId);
		});
	}

	/** Held reservations whose time ran out, oldest first. */
	async expired(now: Date, limit: number): Promise<string[]> {
		const rows = (await this.table.findAll({
			where: { status: "held", expires_at: { [Op.lt]: now } },
			attributes: ["order_id"],
			order: [["expires_at", "ASC"]],
			limit,
			raw: true,
		})) as unknown as Array<{ order_id: string }>;
		return rows.map(r => r.order_id);
	}
}

/** The order id has a live reservation: the transaction that took stock for it is rolled back. */
class AlreadyReserved extends Error {}

function toReservation(row: ReservationRow): Reservation {
	return {
		orderId: row.order_id,
		status: row.status,
		lines: JSON.parse(row.lines) as ReservedLine[],
		expiresAt: new Date(row.expires_at).toISOString(),
	};
}
