/**
 * Stock reservations of the products service: all-or-nothing, by conditional updates in one
 * transaction (never read-modify-write), idempotent by order id, released exactly once.
 * Only the products service imports this.
 */
import { DataTypes, Op, Sequelize, Transaction, UniqueConstraintError, type ModelStatic, type Model } from "sequelize";
import { NotFoundError, OutOfStockError } from "../../lib/errors";

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
		const row = (await this.table.findByPk(orderId, { raw: true, transaction })) as ReservationRow | null;
		return row ? toReservation(row) : null;
	}

	/**
	 * Takes the stock of every line or of none. A second call for the same order answers the first
	 * reservation and takes nothing (a retried or timed-out call never reserves twice).
	 */
	async reserve(orderId: string, items: RequestedLine[], ttlMs: number): Promise<{ reservation: Reservation; taken: boolean }> {
		const lines = mergeLines(items);
		try {
			return await this.begin(async t => {
				const existing = await this.find(orderId, t);
				if (existing && existing.status !== "released") return { reservation: existing, taken: false };
				for (const { productId, quantity } of lines) {
					const [affected] = await this.products.update(
						{ stock: this.sequelize.literal(`stock - ${Number(quantity)}`) },
						{ where: { id: productId, stock: { [Op.gte]: quantity } }, transaction: t, silent: false },
					);
					if (affected === 0) {
						const exists = await this.products.count({ where: { id: productId }, transaction: t });
						if (!exists) throw new NotFoundError("Product", productId);
						throw new OutOfStockError(productId, quantity);
					}
				}
				const catalog = (await this.products.findAll({
					where: { id: lines.map(l => l.productId) },
					attributes: ["id", "sku", "name", "priceCents", "currency"],
					raw: true,
					transaction: t,
				})) as unknown as Array<{ id: number; sku: string; name: string; priceCents: number; currency: string }>;
				const byId = new Map(catalog.map(p => [p.id, p]));
				const reserved: ReservedLine[] = lines.map(l => {
					const p = byId.get(l.productId)!;
					return { productId: p.id, sku: p.sku, name: p.name, quantity: l.quantity, unitPriceCents: p.priceCents, currency: p.currency };
				});
				const expiresAt = new Date(Date.now() + ttlMs);
				const values = { lines: JSON.stringify(reserved), status: "held", expires_at: expiresAt };
				if (existing) await this.table.update(values, { where: { order_id: orderId, status: "released" }, transaction: t });
				else await this.table.create({ order_id: orderId, ...values }, { transaction: t });
				return { reservation: { orderId, status: "held" as const, lines: reserved, expiresAt: expiresAt.toISOString() }, taken: true };
			});
		} catch (err) {
			// A concurrent call for the same order committed first: its reservation is the answer.
			if (err instanceof UniqueConstraintError) {
				const winner = await this.find(orderId);
				if (winner) return { reservation: winner, taken: false };
			}
			throw err;
		}
	}

	/** held → confirmed: the order was committed. Answers the status after the call. */
	async confirm(orderId: string): Promise<ReservationStatus | null> {
		await this.table.update({ status: "confirmed" }, { where: { order_id: orderId, status: "held" } });
		return (await this.find(orderId))?.status ?? null;
	}

	/**
	 * Gives the stock back once: the status moves to released in the same transaction that adds the
	 * stock, guarded by the status it had, so a second release (or a concurrent one) adds nothing.
	 * Answers the product ids whose stock changed.
	 */
	async release(orderId: string): Promise<number[]> {
		return this.begin(async t => {
			const [affected] = await this.table.update(
				{ status: "released" },
				{ where: { order_id: orderId, status: { [Op.in]: ["held", "confirmed"] } }, transaction: t },
			);
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

function toReservation(row: ReservationRow): Reservation {
	return {
		orderId: row.order_id,
		status: row.status,
		lines: JSON.parse(row.lines) as ReservedLine[],
		expiresAt: new Date(row.expires_at).toISOString(),
	};
}
