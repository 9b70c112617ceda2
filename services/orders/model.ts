/** The orders table (only the orders service imports this). */
import { DataTypes } from "sequelize";
import type { ModelDefinition } from "../../mixins/db.mixin";
import type { OrderItem, OrderStatus } from "../../lib/events";

export interface OrderRow {
	id: string;
	userId: number;
	status: OrderStatus;
	items: string;
	totalCents: number | string;
	currency: string;
	idempotencyKey: string | null;
	requestHash: string | null;
	createdAt: Date | string;
	updatedAt: Date | string;
}

/** The columns of an OrderRow, for the statements written by hand (lib/sql.ts). */
export const ORDER_COLUMNS =
	'id, user_id AS "userId", status, items, total_cents AS "totalCents", currency, idempotency_key AS "idempotencyKey", request_hash AS "requestHash", created_at AS "createdAt", updated_at AS "updatedAt"';

export type StoredItems = OrderItem[];

export const OrderModel: ModelDefinition = {
	name: "order",
	define: {
		id: { type: DataTypes.STRING(36), primaryKey: true },
		userId: { type: DataTypes.INTEGER, allowNull: false, field: "user_id" },
		status: { type: DataTypes.STRING(16), allowNull: false },
		items: { type: DataTypes.TEXT, allowNull: false },
		totalCents: { type: DataTypes.BIGINT, allowNull: false, field: "total_cents" },
		currency: { type: DataTypes.STRING(3), allowNull: false },
		idempotencyKey: { type: DataTypes.STRING(200), allowNull: true, field: "idempotency_key" },
		requestHash: { type: DataTypes.STRING(64), allowNull: true, field: "request_hash" },
		createdAt: { type: DataTypes.DATE, field: "created_at" },
		updatedAt: { type: DataTypes.DATE, field: "updated_at" },
	},
	options: { tableName: "orders", timestamps: true },
};
